"""Data parallelism: eight CPU devices in two processes train as one device
does, and their checkpoint evaluates the same on one device."""

import json
import os
import socket
import subprocess
import sys

import jax
import pytest

from mnist_jax import evaluate
from mnist_jax import parallel

from conftest import REPO_ROOT, trained_run_args, with_xla_flags


def test_device_batch_size_rounds_up_to_a_multiple_of_the_devices():
  assert parallel.device_batch_size(999, 2) == 1000
  assert parallel.device_batch_size(999, 1) == 999
  assert parallel.device_batch_size(64, 8) == 64
  assert parallel.device_batch_size(1, 8) == 8


def test_batch_size_must_divide_over_the_devices():
  eight = jax.sharding.AbstractMesh((8,), ('data',))
  parallel.check_divisible(64, eight, 'config.batch_size')
  with pytest.raises(ValueError, match=r'^config\.batch_size=60 does not '
                     'divide over 8 devices; choose a multiple of 8$'):
    parallel.check_divisible(60, eight, 'config.batch_size')


def _final_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f][-1]


def _assert_same_training(a, b):
  for key in ('train_loss', 'test_loss', 'test_loss_tta'):
    assert a[key] == pytest.approx(b[key], rel=1e-5), key
  for key in ('train_accuracy', 'test_accuracy', 'test_accuracy_tta',
              'test_examples'):
    assert a[key] == b[key], key


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_four_devices_train_as_one_device(trained_run,
                                                           tmp_path):
  """conftest's trained run again, on 8 devices over 2 processes: its
  eval_batch_size 999 is rounded up to 1000 there, and the padding is
  masked. That checkpoint then evaluates on this process's one device as
  it did there."""
  env = dict(os.environ, **with_xla_flags(
      '--xla_force_host_platform_device_count=4'),
             JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}',
             JAX_NUM_PROCESSES='2')
  args = trained_run_args(tmp_path, trained_run.data_dir)
  processes = [subprocess.Popen(
      [sys.executable, 'scripts/train.py', *args], cwd=REPO_ROOT,
      env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr
  assert 'process 1 of 2' in outputs[1][1]
  assert 'on 8 device(s)' in outputs[0][1]
  final = _final_metrics(tmp_path)
  _assert_same_training(final, trained_run.summary)

  assert jax.device_count() == 1
  evaluation = evaluate.evaluate_workdir(str(tmp_path))
  assert evaluation['accuracy'] == final['test_accuracy_tta']
  assert evaluation['num_examples'] == 200
