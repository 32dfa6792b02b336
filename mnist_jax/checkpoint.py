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

from mnist_jax import config_checks
from mnist_jax.errors import UserError

# Keys that may change between a run and its resumption: where data is read
# from and how often to log or save. Every other key shapes the computation.
RESUMABLE_KEYS = frozenset({'data_dir', 'tfds_data_dir', 'tfds_manual_dir',
                            'log_every_steps', 'checkpoint_every_steps',
                            'keep_checkpoints', 'eval_batch_size'})


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def _manager(directory: str, keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options,
                               item_names=('state', 'config'))


def _saved_config(manager: ocp.CheckpointManager,
                  step: int) -> ml_collections.ConfigDict:
  """The config saved with checkpoint `step`, completed with keys added since."""
  saved = manager.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore()))['config']
  return config_checks.with_later_keys(ml_collections.ConfigDict(saved))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved with the latest checkpoint in `workdir`."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise UserError(f'--workdir {workdir!r}: no checkpoints folder '
                    '(train there first with scripts/train.py)')
  manager = _manager(directory, read_only=True)
  step = manager.latest_step()
  if step is None:
    raise UserError(f'{directory}: no complete checkpoint')
  return _saved_config(manager, step)


def config_differences(saved: ml_collections.ConfigDict,
                       current: ml_collections.ConfigDict) -> list[str]:
  """Keys (outside RESUMABLE_KEYS) whose values differ, as 'key: a -> b'."""
  as_json = lambda c: json.loads(json.dumps(c.to_dict(), sort_keys=True))
  saved_dict, current_dict = as_json(saved), as_json(current)
  keys = sorted((saved_dict.keys() | current_dict.keys()) - RESUMABLE_KEYS)
  return [f'{key}: {saved_dict.get(key)!r} -> {current_dict.get(key)!r}'
          for key in keys if saved_dict.get(key) != current_dict.get(key)]


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
      raise UserError(
          f'{self.directory} holds a run of a different config '
          f'({"; ".join(differences)}); use a new --workdir or the same config')
    target = {'state': _state_tree(state), 'totals': totals}
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        target)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))['state']
    except (ValueError, KeyError) as e:
      raise UserError(f'{self.directory}: checkpoint {step} does not match '
                      f'this model ({str(e).splitlines()[0]})') from None
    return (serialization.from_state_dict(state, {'ema': {}, **restored['state']}),
            restored['totals'])

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
