"""Orbax checkpoints of the train state, with the run's config beside it.

Each checkpoint holds the train state, the running sums of the epoch in
progress (so a run resumed mid-epoch reports what an uninterrupted run
would) and the config as JSON. Orbax writes each step to a temporary folder
and renames it when complete, so a crash mid-write leaves the previous
checkpoint usable; the newest `config.keep_checkpoints` are kept.

Reads take the newest readable checkpoint: one that a live training run
deletes or supersedes while it is read is retried with the then newest
(that is not damage), and one that fails while still the newest is skipped
with a warning; resuming training moves such a checkpoint aside to
WORKDIR/unreadable_checkpoints so that the run can save that step again.
"""

import errno
import json
import os
import re
import shutil
from typing import Any, Callable, TypeVar

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization
from jax.experimental import multihost_utils

from mnist_jax import config as config_lib

# Keys that may change between a run and its resumption: where data is read
# from, how often to log or save, how the test set is evaluated, and when to
# give up. Every other key shapes the computation.
RESUMABLE_KEYS = frozenset({'data_dir', 'tfds_data_dir', 'tfds_manual_dir',
                            'log_every_steps', 'checkpoint_every_steps',
                            'keep_checkpoints', 'eval_batch_size', 'tta',
                            'divergence_loss'})


# Times a read is retried because a live run replaced the checkpoint.
_RETRIES_FOR_LIVE_RUN = 10
# What a checkpoint takes beside its arrays: metadata and config files, each
# rounded up to whole disk blocks.
_METADATA_BYTES = 128 * 1024

T = TypeVar('T')


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def unreadable_dir(workdir: str) -> str:
  """Where resuming moves checkpoints it could not read."""
  return os.path.join(os.path.abspath(workdir), 'unreadable_checkpoints')


def _manager(directory: str, keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False,
      cleanup_tmp_directories=not read_only)  # left by a failed save
  # Handlers declared up front (orbax would otherwise pick the same ones on
  # first use) so that item_metadata() can read the state's shapes before any
  # restore.
  return _listing_steps(lambda: ocp.CheckpointManager(
      directory, options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler()}))


def _listing_steps(list_steps: Callable[[], T]) -> T:
  """`list_steps()`, retried while it fails for a step that a live training
  run deleted between orbax's listing of the steps and its reading of each
  one's time."""
  for _ in range(_RETRIES_FOR_LIVE_RUN - 1):
    try:
      return list_steps()
    except FileNotFoundError:
      pass
  return list_steps()


class UnreadableCheckpoint(ValueError):
  """A checkpoint whose files orbax failed to read."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


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


def _write_error_cause(error: BaseException) -> str:
  """The cause of a failed save, short: the strerror of an OSError in the
  chain, or of the OS error code that tensorstore's messages end with
  ("... [os_error_code='28']"), else the innermost line."""
  cause = error
  while cause is not None:
    if isinstance(cause, OSError) and cause.strerror:
      return cause.strerror
    cause = cause.__cause__
  code = re.search(r"os_error_code='?(\d+)", str(_innermost_line(error)))
  return os.strerror(int(code.group(1))) if code else _innermost_line(error)


def _unreadable(directory: str, step: int,
                error: BaseException) -> UnreadableCheckpoint:
  return UnreadableCheckpoint(
      f'{directory}: checkpoint {step} is unreadable (corrupt or incomplete?): '
      f'{_innermost_line(error)}', step)


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


def _newest_step(manager: ocp.CheckpointManager,
                 skipped: list[int]) -> int | None:
  _listing_steps(manager.reload)
  return max(set(manager.all_steps()) - set(skipped), default=None)


def _read_newest(manager: ocp.CheckpointManager, read: Callable[[int], T]
                 ) -> tuple[int, T, list[UnreadableCheckpoint]]:
  """(step, `read(step)`, the errors of newer unreadable checkpoints) for the
  newest checkpoint `read` succeeds on (see the module docstring). If none is
  readable, raises the newest's error."""
  errors, retries = [], 0
  while (step := _newest_step(manager, [e.step for e in errors])) is not None:
    try:
      return step, read(step), errors
    except UnreadableCheckpoint as error:
      if (_newest_step(manager, [e.step for e in errors]) != step
          and retries < _RETRIES_FOR_LIVE_RUN):
        retries += 1  # deleted or superseded while it was read
        continue
      errors.append(error)
  directory = str(manager.directory)
  if errors:
    raise UnreadableCheckpoint(
        f'{errors[0]}; no readable checkpoint is left: remove {directory} '
        'to train from scratch', errors[0].step)
  raise FileNotFoundError(f'{directory}: no complete checkpoint')


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved with the newest readable checkpoint in `workdir`."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'workdir {workdir!r}: no checkpoints folder '
                    '(train there first with scripts/train.py)')
  manager = _manager(directory, read_only=True)
  _, config, _ = _read_newest(manager, lambda step: _saved_config(manager, step))
  return config


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


def _free_name(folder: str, name: str) -> str:
  """`folder/name`, or `folder/name.1`, `.2`... if taken."""
  path, number = os.path.join(folder, name), 0
  while os.path.exists(path):
    number += 1
    path = os.path.join(folder, f'{name}.{number}')
  return path


class Checkpoints:
  """Saves and restores (train state, epoch totals) under WORKDIR/checkpoints.

  `read_only`: for evaluation, which may read beside a live training run.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    self._unreadable_dir = unreadable_dir(workdir)
    self._config = config
    self._read_only = read_only
    self._manager = _manager(self.directory, keep=config.keep_checkpoints,
                             read_only=read_only)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, totals: Any) -> None:
    """Saves `step`; an error (a full disk, a folder that cannot be written)
    is an OSError naming the folder and the cause, and leaves the earlier
    checkpoints as they were."""
    tree = {'state': _state_tree(state), 'totals': totals}
    self._check_free_space(step, tree)
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(tree),
          config=ocp.args.JsonSave(self._config.to_dict())))
    # Broad on purpose, around this one orbax call only: a failed write comes
    # back as an OSError, or as tensorstore's ValueError inside orbax's own.
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise OSError(f'{self.directory}: cannot save checkpoint {step}: '
                    f'{_write_error_cause(e)}') from e

  def _check_free_space(self, step: int, tree: Any) -> None:
    """Refuses a save that cannot fit before orbax starts it: orbax's own
    error for a full disk comes after tracebacks that tensorstore's threads
    print. One process only, since several would all have to agree."""
    if jax.process_count() > 1:
      return
    needed = _METADATA_BYTES + sum(
        getattr(leaf, 'nbytes', 8) for leaf in jax.tree.leaves(tree))
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      raise OSError(f'{self.directory}: cannot save checkpoint {step}: '
                    f'{os.strerror(errno.ENOSPC)} ({free // 1024} KiB free, '
                    f'about {needed // 1024} KiB needed)')

  def restore(self, state: Any, totals: Any,
              sharding: jax.sharding.Sharding) -> tuple[Any, Any]:
    """The newest readable checkpoint, shaped like (`state`, `totals`), on
    `sharding`; one warning line if newer ones were unreadable."""
    target = {'state': _state_tree(state), 'totals': totals}
    step, restored, errors = _read_newest(
        self._manager, lambda step: self._restore_step(step, target, sharding))
    if errors:
      self._skipped(errors, step)
    return (serialization.from_state_dict(state, {'ema': {}, **restored['state']}),
            restored['totals'])

  def _restore_step(self, step: int, target: Any,
                    sharding: jax.sharding.Sharding) -> Any:
    differences = config_differences(_saved_config(self._manager, step),
                                     self._config)
    if differences:
      raise ValueError(
          f'{self.directory} holds a run of a different config '
          f'({"; ".join(differences)}); use a new workdir or the same config')
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        target)
    self._check_shapes(step, target)
    try:
      return self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))['state']
    # Broad on purpose, around this one orbax call only: the layout was
    # checked above, so what is left is the files, and orbax reports a
    # truncated or missing data file as a bare Exception (wrapping
    # tensorstore's ValueError), damaged array metadata as a JSONDecodeError.
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise _unreadable(self.directory, step, e) from e

  def _skipped(self, errors: list[UnreadableCheckpoint], step: int) -> None:
    """Warns, in one line, that `step` was read instead of the newer
    checkpoints of `errors` and, unless read-only, moves those out of the way
    of later saves."""
    also = ''.join(f' (so is checkpoint {e.step})' for e in errors[1:])
    if self._read_only:
      logging.warning('%s%s; read checkpoint %d, the newest readable one',
                      errors[0], also, step)
      return
    if jax.process_index() == 0:
      os.makedirs(self._unreadable_dir, exist_ok=True)
      for error in errors:
        os.replace(os.path.join(self.directory, str(error.step)),
                   _free_name(self._unreadable_dir, str(error.step)))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('unreadable checkpoints moved')
    self._manager.reload()
    logging.warning('%s%s; moved to %s, resuming from checkpoint %d',
                    errors[0], also, self._unreadable_dir, step)

  def _check_shapes(self, step: int, target: Any) -> None:
    """Tells a checkpoint saved for another model from an unreadable one, by
    the paths and shapes in its metadata: orbax raises ValueError for a
    mismatch and for many kinds of damage alike."""
    try:
      saved = self._manager.item_metadata(step)['state']
    # Broad on purpose, as in _restore_step(): a missing state/ folder is a
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
