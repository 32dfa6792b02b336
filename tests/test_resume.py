"""Resumption after SIGKILL, and the non-finite loss guard."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mnist_jax import evaluate

from conftest import REPO_ROOT, assert_one_line_error, run_script, write_idx_folder
from test_scripts import train_args

STEPS_PER_EPOCH = 32  # 2048 training examples in batches of 64


def _metrics_without_time(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k != 'elapsed'}
            for line in f]


def _checkpoint_steps(workdir):
  folder = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return write_idx_folder(tmp_path_factory.mktemp('idx'), num_train=2048)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, data_dir):
  flags = ('--config.num_epochs=4', '--config.checkpoint_every_steps=5',
           '--config.keep_checkpoints=3', '--config.max_shift=2',
           '--config.ema_decay=0.9')
  reference = tmp_path / 'reference'
  assert run_script('train.py', *train_args(reference, data_dir, *flags)).returncode == 0

  crashed = tmp_path / 'crashed'
  process = subprocess.Popen(
      [sys.executable, 'scripts/train.py', *train_args(crashed, data_dir, *flags)],
      cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  # Kill once a checkpoint after epoch 1 exists: mid-epoch 2 unless this
  # loop woke late on a busy machine, when it may be later.
  while not any(s > STEPS_PER_EPOCH for s in _checkpoint_steps(crashed)):
    assert process.poll() is None, 'training ended before it could be killed'
    assert time.time() < deadline
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert max(_checkpoint_steps(crashed)) < 4 * STEPS_PER_EPOCH, 'killed too late'
  logged = _metrics_without_time(crashed)
  assert logged == _metrics_without_time(reference)[:len(logged)]
  # Pretend the killed run had trained for 1000 s up to the last epoch its
  # checkpoints keep: the resumed run's clock must go on from there.
  metrics_path = os.path.join(crashed, 'metrics.jsonl')
  with open(metrics_path) as f:
    records = [json.loads(line) for line in f]
  kept = max(_checkpoint_steps(crashed)) // STEPS_PER_EPOCH
  records[kept - 1]['elapsed'] = 1000.0  # later lines, if any, get dropped
  with open(metrics_path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)

  resumed = run_script('train.py', *train_args(crashed, data_dir, *flags))
  assert resumed.returncode == 0, resumed.stderr
  assert 'resumed from the checkpoint of step' in resumed.stderr
  assert _metrics_without_time(crashed) == _metrics_without_time(reference)
  with open(metrics_path) as f:
    elapsed = [json.loads(line)['elapsed'] for line in f][kept - 1:]
  assert elapsed[0] == 1000.0 and len(elapsed) >= 2
  assert all(a < b for a, b in zip(elapsed, elapsed[1:])), elapsed
  assert len(_checkpoint_steps(crashed)) <= 3  # keep_checkpoints


def test_finished_run_is_not_retrained(tmp_path, data_dir):
  workdir = tmp_path / 'w'
  args = train_args(workdir, data_dir, '--config.num_epochs=1')
  assert run_script('train.py', *args).returncode == 0
  before = _metrics_without_time(workdir)
  again = run_script('train.py', *args)
  assert again.returncode == 0, again.stderr
  assert _metrics_without_time(workdir) == before
  assert _checkpoint_steps(workdir) == [STEPS_PER_EPOCH]


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
  workdir = tmp_path / 'w'
  # Plain SGD whose learning rate ramps up to an absurd 1e6: it diverges
  # after a few good steps.
  result = run_script('train.py', *train_args(
      workdir, data_dir, '--config.optimizer=sgd', '--config.learning_rate=1e6',
      '--config.schedule=warmup_cosine', '--config.warmup_epochs=1.5',
      '--config.checkpoint_every_steps=1'))
  assert_one_line_error(result, 'non-finite', 'the last good checkpoint stays in')
  # The loss of step k uses the weights before step k's update, so either
  # may be the first to go: 'training loss at step k' or 'weights after step k'.
  bad_step = int(re.search(r'non-finite (?:training loss at|weights or statistics by) step (\d+)',
                           result.stderr).group(1))
  saved = _checkpoint_steps(workdir)
  assert saved and max(saved) < bad_step
  _, state = evaluate.restore_trained_state(str(workdir))
  assert int(state.step) == max(saved)
  for leaf in jax.tree.leaves((state.params, state.batch_stats)):
    assert np.isfinite(np.asarray(leaf)).all()
  evaluation = run_script('evaluate.py', f'--workdir={workdir}')
  assert evaluation.returncode == 0, evaluation.stderr
