"""Reliability: one writer per workdir, clean stops on SIGINT and SIGTERM,
full disks and unreadable checkpoints, each resuming to the metrics of an
uninterrupted run; and the accurate messages of issue 19."""

import contextlib
import gzip
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax import interrupts
from mnist_jax import io_utils
from mnist_jax import metrics_log
from mnist_jax import train
from mnist_jax import workdir as workdir_lib
from mnist_jax.outliers import analysis

from conftest import (REPO_ROOT, STOPPED_FLAGS, STOPPED_STEPS_PER_EPOCH,
                      assert_one_line_error, tiny_config, train_args,
                      write_idx_folder)

# conftest's uninterrupted run: three epochs of 16 steps.
STEPS = 3 * STOPPED_STEPS_PER_EPOCH
HOST = socket.gethostname()


# ------------------------------------------------------------------ helpers


def _metrics(workdir):
  """metrics.jsonl without the wall-clock times."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k != 'elapsed'}
            for line in f]


def _steps(workdir):
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _save_checkpoints(workdir, fresh, steps=(1, 2, 3)):
  """Checkpoints of the `fresh` state at `steps`, as training saves them."""
  config, state = fresh
  checkpoints = checkpoint_lib.Checkpoints(str(workdir), config)
  for step in steps:
    checkpoints.save(step, state.replace(step=jnp.int32(step)),
                     train.zero_totals())
  checkpoints.close()
  return config, state


def _restore(workdir, config, state, read_only=True):
  """The step of the checkpoint that Checkpoints.restore reads."""
  checkpoints = checkpoint_lib.Checkpoints(str(workdir), config,
                                           read_only=read_only)
  try:
    state, _ = checkpoints.restore(state, train.zero_totals(),
                                   jax.sharding.SingleDeviceSharding(
                                       jax.devices()[0]))
  finally:
    checkpoints.close()
  return int(state.step)


def _truncate_arrays(workdir, step):
  data = os.path.join(workdir, 'checkpoints', str(step), 'state',
                      'ocdbt.process_0', 'd')
  for name in os.listdir(data):
    os.truncate(os.path.join(data, name), 10)


def _warnings(caplog):
  """This package's warnings (orbax warns of read-only managers)."""
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and '/orbax/' not in r.pathname]


_HOLD = '''import sys
from mnist_jax import workdir
with workdir.locked(sys.argv[1], sys.argv[2]):
  print('locked', flush=True)
  sys.stdin.read()
'''


@contextlib.contextmanager
def _held_by_another_process(workdir, command):
  """A process holding `workdir`'s lock as `command`, killed (-9) on exit."""
  process = subprocess.Popen([sys.executable, '-c', _HOLD, str(workdir), command],
                             cwd=REPO_ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
  try:
    assert process.stdout.readline() == 'locked\n'
    yield process
  finally:
    process.kill()
    process.wait()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def fresh(tmp_path_factory):
  """A tiny config keeping three checkpoints, and its initial train state."""
  config = tiny_config(write_idx_folder(tmp_path_factory.mktemp('tiny')),
                       keep_checkpoints=3)
  return config, train.create_state_for_config(config, 8,
                                               jax.random.PRNGKey(0))


def _train(workdir, data_dir, *flags):
  """conftest's STOPPED run by scripts/train.py in a subprocess (which
  shares the session's compilation cache through its environment)."""
  return subprocess.run(
      [sys.executable, 'scripts/train.py',
       *train_args(workdir, data_dir, *STOPPED_FLAGS, *flags)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def _train_until(workdir, data_dir, condition, signal_number, *flags):
  """Trains in a subprocess until `condition()`, then sends it
  `signal_number`; returns (exit code, stderr)."""
  with tempfile.TemporaryFile('w+') as stderr:
    process = subprocess.Popen(
        [sys.executable, 'scripts/train.py',
         *train_args(workdir, data_dir, *STOPPED_FLAGS, *flags)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 300
    while not condition():
      assert process.poll() is None, 'training ended before the signal'
      assert time.time() < deadline
      time.sleep(0.01)
    process.send_signal(signal_number)
    process.wait(timeout=300)
    stderr.seek(0)
    return process.returncode, stderr.read()


# ---------------------------------------------------------- the lock (1)


def test_lock_refuses_a_second_writer_naming_the_holder(tmp_path):
  with workdir_lib.locked(str(tmp_path), 'train'):
    with pytest.raises(workdir_lib.WorkdirBusy) as busy:
      with workdir_lib.locked(str(tmp_path), 'train'):
        pass
    holder = busy.value.holder
    assert (holder.command, holder.pid, holder.host) == ('train', os.getpid(), HOST)
    assert str(busy.value).startswith(
        f"workdir '{tmp_path}' is in use by train (pid {os.getpid()} on "
        f'{HOST}, since {holder.since[:10]}')
    # Readers go on beside a training run, and are told whose.
    with workdir_lib.locked_unless_training(str(tmp_path), 'evaluate') as training:
      assert training == holder
  with workdir_lib.locked(str(tmp_path), 'evaluate'):
    with pytest.raises(workdir_lib.WorkdirBusy, match='in use by evaluate'):
      analysis.run_outlier_analysis(str(tmp_path))
  with workdir_lib.locked(str(tmp_path), 'train'):  # released
    pass
  assert (tmp_path / '.lock').read_text() == ''


@pytest.mark.slow
def test_a_live_run_in_another_process(tmp_path, fresh, caplog):
  """A second trainer is refused, evaluation reads the newest checkpoint and
  says so, and kill -9 of the holder frees the workdir."""
  workdir = str(tmp_path / 'w')
  config, _ = _save_checkpoints(workdir, fresh)
  with _held_by_another_process(workdir, 'train') as holder:
    before = sorted(os.listdir(workdir))
    with pytest.raises(workdir_lib.WorkdirBusy) as busy:
      train.train_and_evaluate(config, workdir)
    assert busy.value.holder.pid == holder.pid
    assert sorted(os.listdir(workdir)) == before  # nothing written
    caplog.set_level(logging.WARNING)
    summary = evaluate.evaluate_workdir(workdir)
    with open(os.path.join(workdir, 'eval.json')) as f:
      assert json.load(f) == summary
    assert summary['step'] == 3
    assert summary['training_running']['pid'] == holder.pid
    assert any(f'training is still running there, train (pid {holder.pid}'
               in line for line in _warnings(caplog))
  # Killed: the kernel released the lock; the file still names the dead
  # holder, and that blocks no one.
  assert f'"pid": {holder.pid}' in open(os.path.join(workdir, '.lock')).read()
  with workdir_lib.locked(workdir, 'train'):
    pass


@pytest.mark.slow
def test_several_processes_are_refused_together(tmp_path, tiny_idx_dir):
  """jax.distributed: process 0 finds the lock taken and the other process,
  which never takes it, stops too instead of waiting for it forever."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
             JAX_NUM_PROCESSES='2')
  with workdir_lib.locked(str(tmp_path), 'train'):
    processes = [subprocess.Popen(
        [sys.executable, 'scripts/train.py', *train_args(tmp_path, tiny_idx_dir)],
        cwd=REPO_ROOT, env=dict(env, JAX_PROCESS_ID=str(i)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
  results = [subprocess.CompletedProcess(p.args, p.returncode, *output)
             for p, output in zip(processes, outputs)]
  assert_one_line_error(results[0], f'is in use by train (pid {os.getpid()} ')
  assert_one_line_error(results[1], 'is in use by another process')
  assert not os.path.exists(tmp_path / 'checkpoints')


# ------------------------------------------- newest readable checkpoint (1, 4)


def test_checkpoint_deleted_while_read_is_not_unreadable(tmp_path, fresh,
                                                         caplog, monkeypatch):
  """A live run saves step 4 and deletes step 3 (as keep_checkpoints has it
  do) while step 3 is being read: the reader retries with step 4, warning of
  nothing."""
  config, state = _save_checkpoints(tmp_path, fresh)
  trainer = checkpoint_lib.Checkpoints(str(tmp_path), config)
  read_step = checkpoint_lib.Checkpoints._restore_step

  def read_while_training(self, step, target, sharding):
    if step == 3:
      trainer.save(4, state.replace(step=jnp.int32(4)), train.zero_totals())
      shutil.rmtree(os.path.join(self.directory, '3'))
    return read_step(self, step, target, sharding)

  monkeypatch.setattr(checkpoint_lib.Checkpoints, '_restore_step',
                      read_while_training)
  caplog.set_level(logging.WARNING)
  assert _restore(tmp_path, config, state) == 4
  assert _warnings(caplog) == []
  trainer.close()


def test_unreadable_newest_checkpoint_is_skipped_with_one_warning(
    tmp_path, fresh, caplog):
  config, state = _save_checkpoints(tmp_path, fresh)
  _truncate_arrays(tmp_path, 3)
  caplog.set_level(logging.WARNING)
  assert _restore(tmp_path, config, state) == 2  # evaluation: read-only
  warning, = _warnings(caplog)
  assert warning.startswith(f'{tmp_path}/checkpoints: checkpoint 3 is '
                            'unreadable (corrupt or incomplete?): ')
  assert warning.endswith('; read checkpoint 2, the newest readable one')
  assert _steps(tmp_path) == [1, 2, 3]

  # Resuming moves it aside, out of the way of the run's own save of step 3.
  assert _restore(tmp_path, config, state, read_only=False) == 2
  assert _warnings(caplog)[-1].endswith(
      f'moved to {tmp_path}/unreadable_checkpoints, resuming from checkpoint 2')
  assert _steps(tmp_path) == [1, 2]
  assert os.listdir(tmp_path / 'unreadable_checkpoints') == ['3']
  _save_checkpoints(tmp_path, fresh, steps=(3,))
  assert _restore(tmp_path, config, state) == 3


def test_no_readable_checkpoint_names_the_folder_to_remove(tmp_path, fresh):
  config, state = _save_checkpoints(tmp_path, fresh, steps=(1, 2))
  for step in (1, 2):
    _truncate_arrays(tmp_path, step)
  with pytest.raises(checkpoint_lib.UnreadableCheckpoint) as error:
    _restore(tmp_path, config, state, read_only=False)
  message = str(error.value)
  assert message.startswith(f'{tmp_path}/checkpoints: checkpoint 2 is unreadable')
  assert message.endswith(f'; no readable checkpoint is left: remove '
                          f'{tmp_path}/checkpoints to train from scratch')
  assert _steps(tmp_path) == [1, 2]  # nothing moved when nothing was read


# ------------------------------------------------------- write errors (2)


def test_failed_writes_name_the_path_and_keep_the_old_file(tmp_path,
                                                           monkeypatch):
  path = tmp_path / 'eval.json'
  path.write_text('old')

  def no_space(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(os, 'replace', no_space)
  with pytest.raises(OSError) as error:
    io_utils.write_json(str(path), {'accuracy': 1.0})
  assert str(error.value) == f'{path}: cannot write: No space left on device'
  assert path.read_text() == 'old'
  assert sorted(os.listdir(tmp_path)) == ['eval.json']


def test_failed_checkpoint_save_is_one_line(tmp_path, monkeypatch):
  """Orbax wraps tensorstore's error, which ends with the OS error code."""
  def read_only(*args, **kwargs):
    raise ValueError('UNKNOWN: Error writing "state.params.Dense_0.kernel/0" '
                     'in OCDBT database at local file "...": Failed writing: '
                     '"...": [os_error_code=\'30\']')

  monkeypatch.setattr(ocp.CheckpointManager, 'save', read_only)
  checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), tiny_config(''))
  with pytest.raises(OSError) as error:
    checkpoints.save(7, {'params': np.zeros(3)}, train.zero_totals())
  checkpoints.close()
  assert str(error.value) == (f'{tmp_path}/checkpoints: cannot save '
                              'checkpoint 7: Read-only file system')


def test_failed_tensorboard_write_is_one_line(tmp_path, monkeypatch):
  class FullDisk:
    def close(self):
      raise RuntimeError('{{function_node __wrapped__FlushSummaryWriter}} '
                         '/w/events.out; No space left on device\n\tmore')

  monkeypatch.setattr(metrics_log, '_open_tensorboard', lambda _: FullDisk())
  log = metrics_log.MetricsLog(str(tmp_path), resume_after_epoch=0)
  with pytest.raises(OSError, match=r'^cannot write TensorBoard events: '
                     r'/w/events.out; No space left on device$'):
    log.close()


# ------------------------------------------- interrupts, full disks (2, 3)


def test_stop_requests_restore_the_previous_handlers():
  before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
  with interrupts.StopRequests() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal_number == signal.SIGTERM
    assert stop.stop_now(sync_point=False)
    os.kill(os.getpid(), signal.SIGINT)  # a first Ctrl-C asks to stop
    with pytest.raises(KeyboardInterrupt):  # a second one acts at once
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
    assert stop.signal_number == signal.SIGTERM
  assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before
  error = stop.interrupted('saved checkpoint 5')
  assert (str(error), error.signal_number) == (
      'stopped by SIGTERM: saved checkpoint 5', signal.SIGTERM)


@contextlib.contextmanager
def _small_disk(folder):
  """A tmpfs at `folder` (resized with _resize), or None where this process
  cannot mount one (not root)."""
  folder.mkdir()
  mounted = os.geteuid() == 0 and subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', str(folder)],
      capture_output=True).returncode == 0
  try:
    yield folder if mounted else None
  finally:
    if mounted:
      subprocess.run(['umount', str(folder)], check=True)


def _resize(disk, kib):
  subprocess.run(['mount', '-o', f'remount,size={kib}k', str(disk)], check=True)


@pytest.mark.slow
def test_sigint_sigterm_and_a_full_disk_lose_nothing(tmp_path,
                                                     uninterrupted_run):
  """One run stopped by SIGINT, by SIGTERM, then (as root, on a tmpfs) by a
  full disk, and resumed each time (the last time in this process), ends
  with conftest's uninterrupted run's metrics, every number. (One run for
  all three: each costs a process.)"""
  reference, data_dir = uninterrupted_run.workdir, uninterrupted_run.data_dir
  assert _steps(reference) == [16, 32, 48]  # epoch ends only
  with _small_disk(tmp_path / 'disk') as disk:
    workdir = str((disk or tmp_path) / 'w')
    every_4 = '--config.checkpoint_every_steps=4'
    code, stderr = _train_until(
        workdir, data_dir,
        lambda: os.path.isdir(os.path.join(workdir, 'checkpoints', '4')),
        signal.SIGINT, every_4)
    assert code == 130, stderr
    first, = re.findall(
        r'^error: stopped by SIGINT: saved checkpoint (\d+) in '
        rf'{workdir}/checkpoints; run the same command to resume$',
        stderr, re.MULTILINE)
    assert 4 <= int(first) < STEPS and int(first) in _steps(workdir)

    code, stderr = _train_until(
        workdir, data_dir, lambda: max(_steps(workdir)) > int(first),
        signal.SIGTERM, every_4)
    assert code == 143, stderr
    second, = re.findall(r'^error: stopped by SIGTERM: saved checkpoint '
                         r'(\d+) ', stderr, re.MULTILINE)
    assert int(first) < int(second) < STEPS and int(second) in _steps(workdir)
    assert f'resumed from the checkpoint of step {first}' in stderr

    if disk:  # room for half a checkpoint more
      saved = _steps(workdir)
      _resize(disk, shutil.disk_usage(disk).used // 1024 + 160)
      full = _train(workdir, data_dir)
      assert_one_line_error(full, f'{workdir}/checkpoints: cannot save '
                            'checkpoint ', ': No space left on device (')
      assert _steps(workdir) == saved
      logged = _metrics(workdir)
      assert logged == _metrics(reference)[:len(logged)]
      _resize(disk, 64 * 1024)

    train.train_and_evaluate(uninterrupted_run.config, workdir)
    assert _metrics(workdir) == _metrics(reference)


# ------------------------------------------------------------ messages (5)


def test_nonfinite_loss_without_a_checkpoint_says_none_was_saved(tmp_path,
                                                                 fresh):
  config, state = fresh
  checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), config)
  totals = dict(train.zero_totals(), nonfinite_step=np.int32(1))
  with pytest.raises(FloatingPointError) as error:
    train._check_training(state, totals, config, checkpoints)
  checkpoints.close()
  assert str(error.value) == ('non-finite training loss at step 2; stopped '
                              'without saving it, no checkpoint was saved '
                              'before it (lower config.learning_rate?)')


def test_divergence_guard(tmp_path, fresh):
  """Finite but far above the loss of guessing (Adam at learning rate 1e9)."""
  config, state = fresh
  config = config.copy_and_resolve_references()
  checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), config)
  checkpoints.save(8, state, train.zero_totals())

  def totals(mean_loss):
    return dict(train.zero_totals(), loss_sum=np.float32(640 * mean_loss),
                count=np.int32(640))

  train._check_training(state, totals(22.9), config, checkpoints)
  with pytest.raises(FloatingPointError) as error:
    train._check_training(state, totals(1e20), config, checkpoints)
  assert str(error.value) == (
      'training diverged: mean train loss 1e+20 in this epoch by step 0, '
      'above config.divergence_loss=23.0; stopped without saving it, the last '
      f'good checkpoint stays in {tmp_path}/checkpoints (step 8) (lower '
      'config.learning_rate?)')
  config.divergence_loss = 0.0  # off
  train._check_training(state, totals(1e20), config, checkpoints)
  checkpoints.close()
  for bad in (-1.0, float('inf'), float('nan')):
    config.divergence_loss = bad
    with pytest.raises(ValueError, match='^config.divergence_loss: must be a '
                       'finite number >= 0'):
      config_lib.validate_config(config)


def test_data_dir_that_is_a_file(tmp_path):
  path = tmp_path / 'train-images-idx3-ubyte'
  path.write_bytes(b'')
  message = f"data_dir '{path}' is a file, not a folder of IDX files"
  with pytest.raises(NotADirectoryError, match=f'^{re.escape(message)}$'):
    data_lib.load_idx_split(str(path), 'train')
  with pytest.raises(NotADirectoryError, match=f'^{re.escape(message)}$'):
    evaluate.check_data_dir(str(tmp_path), str(path))


def test_twice_gzipped_idx_file(tmp_path):
  folder = write_idx_folder(tmp_path, num_train=64, num_test=64, gzip=True)
  path = os.path.join(folder, 'train-labels-idx1-ubyte.gz')
  with open(path, 'rb') as f:
    once = f.read()
  with gzip.open(path, 'wb') as f:
    f.write(once)
  with pytest.raises(ValueError) as error:
    data_lib.load_idx_split(folder, 'train')
  assert str(error.value) == (f'{path}: decompressed, it is gzip again '
                              '(compressed twice?); decompress it once more')


def test_tfds_offline_fails_at_once_with_the_data_dir_hint():
  # .invalid never resolves (RFC 2606): what tfds's download host is offline.
  with pytest.raises(ValueError) as error:
    data_lib._check_reachable('mnist', 'https://storage.invalid/mnist/')
  assert str(error.value).startswith("tfds would download 'mnist' from "
                                     'storage.invalid, which is unreachable (')
  assert str(error.value).endswith(
      '; without network, set config.data_dir to a folder of IDX files or '
      'config.tfds_manual_dir')
