"""Checkpoints (checkpoint.py): what is saved comes back, old configs still
match, and only a run's own config resumes it. Damaged checkpoints and
checkpoints of another model or config are rows of test_cli's table."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import checkpoint
from mnist_jax import config as config_lib
from mnist_jax import evaluate
from mnist_jax import parallel
from mnist_jax import train

from conftest import TRAINED_STEPS, tiny_config


def _equal(a, b) -> bool:
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                           jax.tree.leaves(b)))


def test_saved_state_and_totals_come_back(mlp_state, tmp_path):
  config = tiny_config('', keep_checkpoints=2)
  replicated = parallel.replicated(parallel.create_mesh())
  saved = mlp_state.replace(step=jnp.asarray(5))
  totals = {**train.zero_totals(), 'count': np.int32(320)}
  checkpoints = checkpoint.Checkpoints(str(tmp_path), config)
  for step in (3, 4, 5):
    checkpoints.save(step, saved, totals)
  checkpoints.close()
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4', '5']  # keep 2

  restored, restored_totals = checkpoint.Checkpoints(
      str(tmp_path), config).restore(mlp_state, train.zero_totals(), replicated)
  assert int(restored.step) == 5 and restored.ema == {}
  assert _equal(restored.params, saved.params)
  assert _equal(restored.opt_state, saved.opt_state)
  assert int(restored_totals['count']) == 320
  saved_config = checkpoint.read_config(str(tmp_path))
  assert checkpoint.config_differences(saved_config, config) == []
  assert saved_config.keep_checkpoints == 2


def test_config_from_before_a_key_existed_still_matches():
  current = tiny_config('/data')
  old = current.copy_and_resolve_references()
  for key in config_lib.LATER_KEYS:
    del old[key]
  assert checkpoint.config_differences(config_lib.with_later_keys(old),
                                       current) == []


def test_config_differences_leave_out_what_may_change_on_resume():
  saved = tiny_config('/data')
  current = tiny_config('/moved', eval_batch_size=10, tta=True,
                        log_every_steps=5, keep_checkpoints=9,
                        learning_rate=0.5, seed=2)
  assert checkpoint.config_differences(saved, current) == [
      'learning_rate: 0.01 -> 0.5', 'seed: 0 -> 2']


@pytest.mark.slow
def test_a_trained_run_restores_as_it_ended(trained_run):
  config, state = evaluate.restore_trained_state(trained_run.workdir)
  assert int(state.step) == TRAINED_STEPS
  assert config.data_dir == os.path.join(
      os.path.dirname(trained_run.data_dir), 'saved')  # absolute, as trained
  assert checkpoint.config_differences(config, trained_run.config) == []
  assert state.ema == {}  # no moving average: ema_decay is 0
