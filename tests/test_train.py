"""The training loop (train.py): it learns, is deterministic, logs, neither
reads the device between steps nor recompiles, and resumes exactly."""

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

import mnist_jax
from mnist_jax import batches as batches_lib
from mnist_jax import evaluate
from mnist_jax import metrics_log
from mnist_jax import optim
from mnist_jax import train

from conftest import (REPO_ROOT, STOPPED_FLAGS, STOPPED_STEPS_PER_EPOCH,
                      TRAINED_STEPS, absl_messages, snapshot, tiny_config,
                      train_args, write_idx_folder)

pytestmark = pytest.mark.slow  # every test here trains, or reads a run

STEPS_PER_EPOCH = 8  # conftest's 512 training examples in batches of 64


def _records_without_time(workdir):
  return [{k: v for k, v in record.items() if k != 'elapsed'}
          for record in metrics_log.read_metrics(str(workdir))]


def test_training_learns_and_keeps_its_records(trained_run):
  records = metrics_log.read_metrics(trained_run.workdir)
  assert [r['epoch'] for r in records] == [1, 2]
  assert records[-1] == trained_run.summary
  assert set(records[0]) == {'epoch', 'train_loss', 'train_accuracy',
                             'test_loss', 'test_accuracy', 'test_examples',
                             'elapsed'}
  assert trained_run.summary['test_examples'] == 200
  assert trained_run.summary['test_accuracy'] > 0.5  # chance is 0.1
  checkpoints = os.listdir(os.path.join(trained_run.workdir, 'checkpoints'))
  assert checkpoints == [str(TRAINED_STEPS)]  # keep_checkpoints=1


def _tensorboard(workdir) -> event_accumulator.EventAccumulator:
  events = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  return events


def _scalars(events, tag) -> dict[int, float]:
  return {event.step: tensor_util.make_ndarray(event.tensor_proto).item()
          for event in events.Tensors(tag)}


def test_tensorboard_gets_hparams_and_per_step_scalars(trained_run):
  events = _tensorboard(trained_run.workdir)
  logged_steps = [2, 4, 6, 10, 12, 14]  # every 2 steps, epoch ends aside
  schedule = optim.create_learning_rate_schedule(trained_run.config,
                                                 STEPS_PER_EPOCH)
  learning_rates = _scalars(events, 'learning_rate')
  assert sorted(learning_rates) == logged_steps
  for step, rate in learning_rates.items():
    assert rate == pytest.approx(float(schedule(step)), rel=1e-6)
  losses = _scalars(events, 'train_loss_step')
  assert sorted(losses) == logged_steps
  assert all(0 < loss < 10 for loss in losses.values())
  records = metrics_log.read_metrics(trained_run.workdir)
  assert _scalars(events, 'test_accuracy') == {
      r['epoch']: pytest.approx(r['test_accuracy']) for r in records}

  content = events.SummaryMetadata(
      '_hparams_/session_start_info').plugin_data.content
  hparams = plugin_data_pb2.HParamsPluginData.FromString(
      content).session_start_info.hparams
  assert hparams['batch_size'].number_value == 64
  assert hparams['model'].string_value == 'convnet'
  assert hparams['max_shift'].number_value == 2
  assert hparams['tta'].bool_value is True
  assert 'widths' in hparams['model_kwargs'].string_value
  assert set(hparams) == set(trained_run.config.keys())


def test_progress_lines_have_an_eta(trained_run):
  line = re.compile(r'epoch (\d): +(\d+)% \((\d)/8 steps\), train loss '
                    r'\d+\.\d{4}, accuracy \d\.\d{4}, \d+ images/s, '
                    r'ETA (\d+m\d\ds|\d+s)$')
  progress = [m for m in map(line.match, trained_run.messages) if m]
  assert [(int(m[1]), int(m[3])) for m in progress] == [
      (1, 2), (1, 4), (1, 6), (2, 2), (2, 4), (2, 6)]
  assert [int(m[2]) for m in progress] == [25, 50, 75] * 2


# ------------------------------------------------- host reads and compiles


_CONVERSIONS = frozenset({'__array__', '__float__', '__int__', '__bool__',
                          '__index__', '__complex__', 'tolist'})
_NUMPY_ARRAYS = (np.asarray, np.array, np.asanyarray)
_LIBRARY = os.path.dirname(os.path.abspath(mnist_jax.__file__)) + os.sep


def _count_host_reads(reads):
  """A sys.setprofile function (this thread only) that appends to `reads`
  each host read of a jax.Array it sees: a call of the conversion protocol
  (float(x), int(x), bool(x), x.tolist(), jax.device_get(x)), or a call of
  np.asarray / np.array from the library's code, which on a CPU reads
  through the buffer protocol. On a CPU, jax.transfer_guard does not see
  device-to-host copies (jax issue 16602). Not seen: x.item()."""
  def profile(frame, event, arg):
    code = frame.f_code
    if event == 'call':
      if (code.co_name in _CONVERSIONS and code.co_argcount and isinstance(
          frame.f_locals.get(code.co_varnames[0]), jax.Array)):
        reads.append(code.co_name)
    elif event == 'c_call' and code.co_filename.startswith(_LIBRARY):
      if any(arg is function for function in _NUMPY_ARRAYS):
        reads.append(f'{arg.__name__} in {code.co_name}')
  return profile


def test_the_read_counter_sees_reads_and_nothing_else():
  reads = []
  values = [jnp.arange(3.0) + i for i in range(5)]
  sys.setprofile(_count_host_reads(reads))
  try:
    float(values[0][1])
    int(values[1][2])
    bool(values[2][0])
    jax.device_get(values[3])
    values[4].tolist()
    jax.block_until_ready(jnp.sum(values[0]))  # not a read
  finally:
    sys.setprofile(None)
  assert sorted(reads) == ['__array__', '__bool__', '__float__', '__int__',
                           'tolist']


@contextlib.contextmanager
def _reads_between_steps(monkeypatch):
  """Yields the list of host reads the loop makes between two steps of an
  epoch (counted on this thread, from the return of one step to the call
  of the next), and the list of times the train step is traced."""
  reads, traces = [], []
  train_epoch = train._train_epoch  # pylint: disable=protected-access

  def counting_train_epoch(train_fn, *args, **kwargs):

    def counted(state, totals, batches, i):
      sys.setprofile(None)
      outputs = train_fn(state, totals, batches, i)
      if i + 1 < batches_lib.num_batches(batches):
        sys.setprofile(_count_host_reads(reads))
      return outputs
    return train_epoch(counted, *args, **kwargs)

  def on_trace(event, duration, **kwargs):
    del duration
    if (event == '/jax/core/compile/jaxpr_trace_duration'
        and kwargs.get('fun_name') == 'train_fn'):
      traces.append(event)

  monkeypatch.setattr(train, '_train_epoch', counting_train_epoch)
  monitoring.register_event_duration_secs_listener(on_trace)
  try:
    yield reads, traces
  finally:
    sys.setprofile(None)
    monitoring.unregister_event_duration_listener(on_trace)


def test_steps_neither_read_the_host_nor_recompile(trained_run, tmp_path,
                                                   monkeypatch):
  """The trained run's config without progress lines mid-epoch: no host
  reads between steps, one trace of the train step for two epochs, and the
  same records as the trained run (logging changes no number; a run is a
  function of its config)."""
  config = trained_run.config.copy_and_resolve_references()
  config.log_every_steps = 1000
  with _reads_between_steps(monkeypatch) as (reads, traces):
    train.train_and_evaluate(config, str(tmp_path))
  assert reads == []
  assert len(traces) == 1
  assert _records_without_time(tmp_path) == _records_without_time(
      trained_run.workdir)


# ------------------------------------------------------------- resumption


def test_a_finished_run_is_not_retrained(trained_run, trained_copy):
  checkpoints = os.path.join(trained_copy, 'checkpoints')
  before = snapshot(checkpoints), _records_without_time(trained_copy)
  summary = train.train_and_evaluate(trained_run.config, trained_copy)
  assert summary == trained_run.summary
  assert (snapshot(checkpoints), _records_without_time(trained_copy)) == before


def _checkpoint_steps(workdir):
  folder = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(
    uninterrupted_run, tmp_path):
  """A run killed mid-epoch (after a checkpoint of epoch 2) and resumed
  writes the records, moving average and all, of conftest's uninterrupted
  run."""
  steps_per_epoch = STOPPED_STEPS_PER_EPOCH
  reference, config = uninterrupted_run.workdir, uninterrupted_run.config
  crashed = tmp_path / 'crashed'
  process = subprocess.Popen(
      [sys.executable, 'scripts/train.py',
       *train_args(crashed, uninterrupted_run.data_dir, *STOPPED_FLAGS,
                   '--config.checkpoint_every_steps=5')],
      cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  # Kill once a checkpoint after epoch 1 exists (of step 20): mid-epoch 2
  # unless this loop woke late on a busy machine, when it may be later.
  while not any(s > steps_per_epoch for s in _checkpoint_steps(crashed)):
    assert process.poll() is None, 'training ended before it could be killed'
    assert time.time() < deadline
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert max(_checkpoint_steps(crashed)) < 3 * steps_per_epoch, 'killed late'
  logged = _records_without_time(crashed)
  assert logged == _records_without_time(reference)[:len(logged)]
  # Pretend the killed run had trained for 1000 s up to the last epoch its
  # checkpoints keep: the resumed run's clock must go on from there.
  metrics_path = crashed / 'metrics.jsonl'
  records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
  kept = max(_checkpoint_steps(crashed)) // steps_per_epoch
  records[kept - 1]['elapsed'] = 1000.0  # later lines, if any, get dropped
  metrics_path.write_text(''.join(json.dumps(r) + '\n' for r in records))

  with absl_messages() as messages:
    train.train_and_evaluate(config, str(crashed))
  assert any('resumed from the checkpoint of step' in m for m in messages)
  assert _records_without_time(crashed) == _records_without_time(reference)
  elapsed = [r['elapsed'] for r in metrics_log.read_metrics(str(crashed))]
  assert elapsed[kept - 1] == 1000.0 and len(elapsed[kept - 1:]) >= 2
  assert all(a < b for a, b in zip(elapsed[kept - 1:], elapsed[kept:]))
  assert len(_checkpoint_steps(crashed)) <= 3  # keep_checkpoints


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  # A learning rate that ramps up to an absurd 1e6: the run diverges after
  # a few good steps.
  data_dir = write_idx_folder(tmp_path / 'idx')
  config = tiny_config(data_dir, learning_rate=1e6, schedule='warmup_cosine',
                       warmup_epochs=1.5, checkpoint_every_steps=1)
  workdir = tmp_path / 'work'
  threads_before = set(threading.enumerate())
  with pytest.raises(FloatingPointError) as stopped:
    train.train_and_evaluate(config, str(workdir))
  message = str(stopped.value)
  assert 'stopped without saving it' in message, message
  # The checkpoints and the TensorBoard writer were closed on the way out.
  assert not [t for t in set(threading.enumerate()) - threads_before
              if t.is_alive()]
  # The loss of step k uses the weights before step k's update, so either
  # may be the first to go bad.
  bad_step = int(re.search(r'(?:at|by) step (\d+)', message).group(1))
  saved = _checkpoint_steps(workdir)
  assert saved and max(saved) < bad_step
  _, state = evaluate.restore_trained_state(str(workdir))
  assert int(state.step) == max(saved)
  for leaf in jax.tree.leaves((state.params, state.opt_state, state.batch_stats)):
    assert np.isfinite(np.asarray(leaf)).all()
  assert evaluate.evaluate_workdir(str(workdir))['step'] == max(saved)


def test_compile_in_background_gives_the_jitted_functions_executable():
  donated = jax.jit(lambda x, y, i: (x * y[i], y), donate_argnums=0)
  x, y = jnp.arange(3.0), jnp.arange(6.0).reshape(2, 3)
  with concurrent.futures.ThreadPoolExecutor(1) as executor:
    compiled = train.compile_in_background(executor, donated, x, y, 0).result()
  assert isinstance(compiled, jax.stages.Compiled)
  expected = donated(jnp.arange(3.0), y, 1)
  np.testing.assert_array_equal(compiled(x, y, 1)[0], expected[0])
  assert x.is_deleted()  # its donation kept
