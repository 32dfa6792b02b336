"""Data parallelism: 8 CPU devices and two processes agree with one device."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, assert_one_line_error, run_script, write_idx_folder
from test_scripts import train_args

EIGHT_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
FLAGS = ('--config.num_epochs=1', '--config.max_shift=1', '--config.tta=true')


def _final_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f][-1]


def _assert_same_training(a, b):
  for key in ('train_loss', 'test_loss', 'test_loss_tta'):
    assert a[key] == pytest.approx(b[key], rel=1e-5), key
  for key in ('train_accuracy', 'test_accuracy', 'test_accuracy_tta',
              'test_examples'):
    assert a[key] == b[key], key


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return write_idx_folder(tmp_path_factory.mktemp('idx'), num_train=1024)


@pytest.fixture(scope='module')
def one_device_run(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one')
  result = run_script('train.py', *train_args(workdir, data_dir, *FLAGS))
  assert result.returncode == 0, result.stderr
  return _final_metrics(workdir)


def test_eight_devices_match_one(data_dir, one_device_run, tmp_path):
  # eval_batch_size 100 is rounded up to 104 on 8 devices; the padding of the
  # last batch is masked, so the test metrics still match one device's.
  result = run_script('train.py', *train_args(tmp_path, data_dir, *FLAGS,
                                              '--config.eval_batch_size=100'),
                      env=EIGHT_DEVICES)
  assert result.returncode == 0, result.stderr
  assert 'on 8 device(s)' in result.stderr
  _assert_same_training(_final_metrics(tmp_path), one_device_run)


def test_batch_size_must_divide_over_devices(data_dir, tmp_path):
  result = run_script('train.py', *train_args(tmp_path, data_dir, *FLAGS,
                                              '--config.batch_size=60'),
                      env=EIGHT_DEVICES)
  assert_one_line_error(result, '--config.batch_size=60 does not divide over 8 devices')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(data_dir, one_device_run, tmp_path):
  env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}',
             JAX_NUM_PROCESSES='2')
  processes = [subprocess.Popen(
      [sys.executable, 'scripts/train.py', *train_args(tmp_path, data_dir, *FLAGS)],
      cwd=REPO_ROOT, env=dict(env, JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr
  assert 'process 1 of 2' in outputs[1][1]
  _assert_same_training(_final_metrics(tmp_path), one_device_run)
