"""Orbax checkpoints of the train state, with the run's config beside it.

Each checkpoint holds the train state, the running sums of the epoch in
progress (so a run resumed mid-epoch reports what an uninterrupted run
would) and the config as JSON. Orbax writes each step to a temporary folder
and renames it when complete, so a crash mid-write leaves the previous
checkpoint usable; the newest `config.keep_checkpoints` are kept.
"""

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import serialization

from mnist_jax import config as config_lib

# Keys that may change between a run and its resumption: where data is read
# from, how often to log or save, and how the test set is evaluated. Every
# other key shapes the computation.
RESUMABLE_KEYS = frozenset({'data_dir', 'tfds_data_dir', 'tfds_manual_dir',
                            'log_every_steps', 'checkpoint_every_steps',
                            'keep_checkpoints', 'eval_batch_size', 'tta'})


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def _manager(directory: str, keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False)
  # Handlers declared up front (orbax would otherwise pick the same ones on
  # first use) so that item_metadata() can read the state's shapes before any
  # restore.
  return ocp.CheckpointManager(
      directory, options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler()})


class UnreadableCheckpoint(ValueError):
  """A checkpoint whose files orbax failed to read."""


def _innermost_line(error: BaseException) -> str:
  """The first line of the error at the bottom of an explicit `raise ... from`
  chain: orbax wraps tensorstore's precise error (file, byte range) in a vague
  one."""
  while error.__cause__ is not None:
    error = error.__cause__
  # args[0], not str(): str() of a KeyError is the repr of its message.
  text = error.args[0] if len(error.args) == 1 else str(error)
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


def _unreadable(directory: str, step: int,
                error: BaseException) -> UnreadableCheckpoint:
  return UnreadableCheckpoint(
      f'{directory}: checkpoint {step} is unreadable (corrupt or incomplete?): '
      f'{_innermost_line(error)}')


def _saved_config(manager: ocp.CheckpointManager,
                  step: int) -> ml_collections.ConfigDict:
  """The config saved with checkpoint `step`, completed with keys added since."""
  directory = str(manager.directory)
  try:
    saved = manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))['config']
  # Broad on purpose, around this one orbax call only: a missing, unreadable
  # or malformed file comes back as FileNotFoundError, PermissionError,
  # json.JSONDecodeError or whatever else orbax raises, with no common base.
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise _unreadable(directory, step, e) from e
  if not isinstance(saved, dict):
    raise _unreadable(directory, step, TypeError(
        f'config/metadata holds a JSON {type(saved).__name__}, not an object'))
  return config_lib.with_later_keys(ml_collections.ConfigDict(saved))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved with the latest checkpoint in `workdir`."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'workdir {workdir!r}: no checkpoints folder '
                    '(train there first with scripts/train.py)')
  manager = _manager(directory, read_only=True)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'{directory}: no complete checkpoint')
  return _saved_config(manager, step)


def config_differences(saved: ml_collections.ConfigDict,
                       current: ml_collections.ConfigDict) -> list[str]:
  """Keys (outside RESUMABLE_KEYS) whose values differ, as 'key: a -> b'."""
  as_json = lambda c: json.loads(json.dumps(c.to_dict(), sort_keys=True))
  saved_dict, current_dict = as_json(saved), as_json(current)
  keys = sorted((saved_dict.keys() | current_dict.keys()) - RESUMABLE_KEYS)
  return [f'{key}: {saved_dict.get(key)!r} -> {current_dict.get(key)!r}'
          for key in keys if saved_dict.get(key) != current_dict.get(key)]


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Each array's shape by its path in `tree`, e.g. "['state']['step']"."""
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _first_mismatch(saved: dict[str, tuple[int, ...]],
                    wanted: dict[str, tuple[int, ...]]) -> str | None:
  """The first way the saved arrays differ from the model's, or None. Paths
  and shapes are all orbax insists on (it casts dtypes)."""
  missing = sorted(wanted.keys() - saved.keys())
  if missing:
    return f'the checkpoint has no array {missing[0]}'
  extra = sorted(saved.keys() - wanted.keys())
  if extra:
    return f'the checkpoint has an array {extra[0]} this model lacks'
  changed = [path for path in sorted(wanted) if saved[path] != wanted[path]]
  if changed:
    path = changed[0]
    return (f'{path} has shape {saved[path]} in the checkpoint, '
            f'{wanted[path]} in this model')
  return None


def _state_tree(state: Any) -> dict[str, Any]:
  """The train state as orbax saves it. Without EMA, `ema` is left out, so
  the tree is the one checkpoints had before EMA existed (they still load)."""
  tree = serialization.to_state_dict(state)
  if 'ema' in tree and not tree['ema']:
    del tree['ema']
  return tree


class Checkpoints:
  """Saves and restores (train state, epoch totals) under WORKDIR/checkpoints."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.directory = checkpoint_dir(workdir)
    self._config = config
    self._manager = _manager(self.directory, keep=config.keep_checkpoints)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, totals: Any) -> None:
    tree = {'state': _state_tree(state), 'totals': totals}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree),
        config=ocp.args.JsonSave(self._config.to_dict())))

  def restore(self, state: Any, totals: Any,
              sharding: jax.sharding.Sharding) -> tuple[Any, Any]:
    """The latest checkpoint, shaped like (`state`, `totals`), on `sharding`."""
    step = self.latest_step()
    differences = config_differences(_saved_config(self._manager, step),
                                     self._config)
    if differences:
      raise ValueError(
          f'{self.directory} holds a run of a different config '
          f'({"; ".join(differences)}); use a new workdir or the same config')
    target = {'state': _state_tree(state), 'totals': totals}
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        target)
    self._check_shapes(step, target)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))['state']
    # Broad on purpose, around this one orbax call only: the layout was
    # checked above, so what is left is the files, and orbax reports a
    # truncated or missing data file as a bare Exception (wrapping
    # tensorstore's ValueError), damaged array metadata as a JSONDecodeError.
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise _unreadable(self.directory, step, e) from e
    return (serialization.from_state_dict(state, {'ema': {}, **restored['state']}),
            restored['totals'])

  def _check_shapes(self, step: int, target: Any) -> None:
    """Tells a checkpoint saved for another model from an unreadable one, by
    the paths and shapes in its metadata: orbax raises ValueError for a
    mismatch and for many kinds of damage alike."""
    try:
      saved = self._manager.item_metadata(step)['state']
    # Broad on purpose, as in restore(): a missing state/ folder is a
    # KeyError, a damaged _METADATA a JSONDecodeError, a damaged OCDBT
    # manifest or .zarray a ValueError from tensorstore.
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise _unreadable(self.directory, step, e) from e
    if saved is None:  # no _METADATA: orbax restores without it, unchecked
      return
    mismatch = _first_mismatch(_shapes(saved), _shapes(target))
    if mismatch:
      raise ValueError(f'{self.directory}: checkpoint {step} does not match '
                      f'this model ({mismatch})')

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
