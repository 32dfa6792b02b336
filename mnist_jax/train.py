"""The training loop: `train_and_evaluate(config, workdir)`.

The loop only feeds the jitted steps (steps.py), checkpoints and logs. Each
epoch's batches sit on the devices (batches.py) and a step slices its batch
inside the compiled computation: one dispatch, no host transfer. Metrics are
running sums kept on the devices and read only for progress lines,
checkpoints and the end of an epoch; the test set is padded and masked so
that every test example counts exactly once.

A run holds its workdir's lock (workdir.py) throughout. SIGINT and SIGTERM
stop it after the current step with a checkpoint of that step
(interrupts.py), so that resuming loses nothing and reports what an
uninterrupted run would. At every host sync the run stops, without saving,
on a non-finite loss or weights, or on a mean training loss above
`config.divergence_loss`.
"""

import concurrent.futures
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mnist_jax import augment
from mnist_jax import batches as batches_lib
from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import interrupts
from mnist_jax import io_utils
from mnist_jax import metrics_log
from mnist_jax import models
from mnist_jax import optim
from mnist_jax import parallel
from mnist_jax import steps
from mnist_jax import tta
from mnist_jax import workdir as workdir_lib
from mnist_jax import xla_cpu
from mnist_jax.batches import Batch
from mnist_jax.steps import Metrics, TrainState


def zero_totals() -> Metrics:
  """Running sums of an epoch, kept on device; `nonfinite_step` is -1 until
  the first step whose loss is NaN or infinite."""
  return {'loss_sum': np.zeros((), np.float32),
          'correct': np.zeros((), np.int32),
          'count': np.zeros((), np.int32),
          'nonfinite_step': np.full((), -1, np.int32)}


def _add(totals: Metrics, metrics: Metrics, step: jax.Array) -> Metrics:
  """Adds a step's metrics to the running sums (inside the jitted step)."""
  bad = ~jnp.isfinite(metrics['loss_sum']) & (totals['nonfinite_step'] < 0)
  return {'loss_sum': totals['loss_sum'] + metrics['loss_sum'],
          'correct': totals['correct'] + metrics['correct'].astype(jnp.int32),
          'count': totals['count'] + metrics['count'].astype(jnp.int32),
          'nonfinite_step': jnp.where(bad, step, totals['nonfinite_step'])}


def make_train_fn(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """Jitted (state, totals, batches, i) -> (state, totals): step on batch i."""
  step_fn = functools.partial(
      steps.train_step, label_smoothing=config.label_smoothing,
      augmentation=augment.Augmentation.from_config(config),
      ema_decay=config.ema_decay)

  def train_fn(state, totals, batches, i):
    batch = jax.tree.map(lambda a: a[i], batches)
    step = state.step
    state, metrics = step_fn(state, batch)
    return state, _add(totals, metrics, step)

  return jax.jit(train_fn, donate_argnums=(0, 1),
                 out_shardings=parallel.replicated(mesh),
                 compiler_options=xla_cpu.STEP_COMPILER_OPTIONS)


def make_eval_fn(mesh: jax.sharding.Mesh,
                 views: tuple[tta.View, ...] = tta.IDENTITY):
  def eval_fn(state, totals, batches, i):
    metrics = steps.eval_step(state, jax.tree.map(lambda a: a[i], batches), views)
    return _add(totals, metrics, jnp.zeros((), jnp.int32))
  return jax.jit(eval_fn, donate_argnums=1,
                 out_shardings=parallel.replicated(mesh),
                 compiler_options=xla_cpu.STEP_COMPILER_OPTIONS)


def compile_in_background(executor: concurrent.futures.Executor, jitted: Any,
                          *args: Any) -> concurrent.futures.Future:
  """`jitted` compiled for the shapes and shardings of `args` on `executor`:
  a future of the executable, which takes arguments like `args`.

  `args` may hold jax.ShapeDtypeStructs. The loop compiles its train step
  while the state is created and its eval step while the first epoch
  trains: compilation takes seconds of a `configs/fast.py` run. The
  executable itself is what must be called: in jax 0.10 an ahead-of-time
  compilation does not fill `jax.jit`'s cache (docs/performance.md).
  """
  specs = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)
      if isinstance(a, jax.Array) else a, args)
  return executor.submit(lambda: jitted.lower(*specs).compile())


def evaluate(eval_fn, state: TrainState, batches: Batch) -> dict[str, float]:
  """Loss, accuracy and count over every (unmasked) example of `batches`."""
  # Placed like the totals eval_fn returns, so that it compiles once.
  totals = jax.device_put(zero_totals(), state.step.sharding)
  for i in range(batches_lib.num_batches(batches)):
    totals = eval_fn(state, totals, batches, i)
  return summarize(totals)


def summarize(totals: Metrics) -> dict[str, float]:
  totals = jax.device_get(totals)
  count = int(totals['count'])
  return {'loss': float(totals['loss_sum']) / max(count, 1),
          'accuracy': float(totals['correct']) / max(count, 1),
          'count': count}


def create_state_for_config(config: ml_collections.ConfigDict,
                            steps_per_epoch: int, rng: jax.Array,
                            sharding: jax.sharding.Sharding | None = None
                            ) -> TrainState:
  """`steps.create_train_state` with the config's model and optimizer."""
  return trace_state_for_config(config, steps_per_epoch, rng,
                                sharding).lower().compile()(rng)


def trace_state_for_config(config: ml_collections.ConfigDict,
                           steps_per_epoch: int, rng: jax.Array,
                           sharding: jax.sharding.Sharding | None = None
                           ) -> jax.stages.Traced:
  """`steps.trace_train_state` with the config's model and optimizer."""
  return steps.trace_train_state(
      models.create_model(config),
      optim.create_optimizer(config, steps_per_epoch), rng,
      ema=bool(config.ema_decay), sharding=sharding)


# ------------------------------------------------------------------- the loop


def _all_finite(tree: Any) -> bool:
  """Checked on the host, at sync points only: a jitted check of every leaf
  would cost a second's compilation on a CPU."""
  return all(np.isfinite(leaf).all() for leaf in jax.device_get(jax.tree.leaves(tree)))


def _check_training(state: TrainState, totals: Metrics,
                    config: ml_collections.ConfigDict,
                    checkpoints: checkpoint_lib.Checkpoints) -> None:
  """Stops on a NaN or infinite loss or weights (a step's loss is computed
  before its update, so an update that overflows shows only in the weights),
  or on an epoch's mean training loss so far above config.divergence_loss."""
  totals = jax.device_get(totals)  # one read of the running sums
  bad_step = int(totals['nonfinite_step'])
  mean_loss = summarize(totals)['loss']
  if bad_step >= 0:
    problem = f'non-finite training loss at step {bad_step + 1}'
  elif not _all_finite((state.params, state.batch_stats, state.ema)):
    problem = f'non-finite weights or statistics by step {int(state.step)}'
  elif config.divergence_loss and mean_loss > config.divergence_loss:
    problem = (f'training diverged: mean train loss {mean_loss:.3g} in this '
               f'epoch by step {int(state.step)}, above '
               f'config.divergence_loss={config.divergence_loss}')
  else:
    return
  kept = checkpoints.latest_step()
  kept = ('no checkpoint was saved before it' if kept is None else
          f'the last good checkpoint stays in {checkpoints.directory} '
          f'(step {kept})')
  raise FloatingPointError(f'{problem}; stopped without saving it, {kept} '
                           '(lower config.learning_rate?)')


class _Progress:
  """Progress lines and per-step TensorBoard scalars every `every` steps.

  The rate and the ETA are measured from the end of the first step this
  process ran, so they exclude compilation.
  """

  def __init__(self, log: metrics_log.MetricsLog, every: int,
               total_steps: int, batch_size: int,
               learning_rate: Callable[[int], Any]):
    self._log, self.every = log, every
    self._total_steps, self._batch_size = total_steps, batch_size
    self._learning_rate = jax.jit(learning_rate)  # eagerly: many compiles
    self._clock: tuple[int, float] | None = None  # (step, time) once compiled
    self._window = (0.0, 0)  # epoch's loss_sum and count at the last line

  def start_epoch(self) -> None:
    self._window = (0.0, 0)

  def step_done(self, step: int, epoch: int, step_in_epoch: int,
                steps_per_epoch: int, totals: Metrics) -> None:
    if self._clock is None:
      jax.block_until_ready(totals)
      self._clock = (step, time.time())
    if step_in_epoch % self.every or step_in_epoch == steps_per_epoch:
      return
    running = summarize(totals)
    loss_sum, count = running['loss'] * running['count'], running['count']
    window_loss = ((loss_sum - self._window[0]) /
                   max(count - self._window[1], 1))
    self._window = (loss_sum, count)
    first_step, first_time = self._clock
    seconds = time.time() - first_time
    rate = (step - first_step) / seconds if seconds > 0 else 0.0
    eta = (self._total_steps - step) / rate if rate > 0 else float('nan')
    logging.info('epoch %d: %3d%% (%d/%d steps), train loss %.4f, accuracy '
                 '%.4f, %.0f images/s, ETA %s', epoch,
                 100 * step_in_epoch // steps_per_epoch, step_in_epoch,
                 steps_per_epoch, running['loss'], running['accuracy'],
                 rate * self._batch_size, _duration(eta))
    self._log.write_step_scalars(step, {
        'train_loss_step': window_loss,
        'learning_rate': float(self._learning_rate(step))})


def _duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes}m{seconds:02d}s' if minutes else f'{seconds}s'


def _with_absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy whose data folders resolve from anywhere (the checkpoint keeps it)."""
  config = config.copy_and_resolve_references()
  for key in ('data_dir', 'tfds_data_dir', 'tfds_manual_dir'):
    if config.get(key):
      config[key] = os.path.abspath(os.path.expanduser(config[key]))
  return config


def _train_epoch(train_fn, state: TrainState, totals: Metrics, batches: Batch,
                 epoch: int, config: ml_collections.ConfigDict,
                 checkpoints: checkpoint_lib.Checkpoints, progress: _Progress,
                 stop: interrupts.StopRequests) -> tuple[TrainState, Metrics]:
  """Runs the rest of `epoch` from `state.step` (its start, or a resumed step).

  Syncs with the device only for progress lines and checkpoints; on a stop
  request, saves the step just done and raises Interrupted.
  """
  steps_per_epoch = batches_lib.num_batches(batches)
  first = int(state.step) - (epoch - 1) * steps_per_epoch
  progress.start_epoch()
  for i in range(first, steps_per_epoch):
    state, totals = train_fn(state, totals, batches, i)
    done, step = i + 1, (epoch - 1) * steps_per_epoch + i + 1
    progress.step_done(step, epoch, done, steps_per_epoch, totals)
    if done == steps_per_epoch:
      break
    line = done % progress.every == 0
    save = bool(config.checkpoint_every_steps and
                step % config.checkpoint_every_steps == 0)
    stopping = stop.stop_now(sync_point=line)
    if line or save or stopping:
      _check_training(state, totals, config, checkpoints)
    if save or stopping:
      checkpoints.save(step, state, totals)
    if stopping:
      raise stop.interrupted(_resume_hint(checkpoints, step))
  _check_training(state, totals, config, checkpoints)
  return state, totals


def _resume_hint(checkpoints: checkpoint_lib.Checkpoints, step: int) -> str:
  return (f'saved checkpoint {step} in {checkpoints.directory}; run the same '
          'command to resume')


def _tta_metrics(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                 state: TrainState, test_batches: Batch) -> dict[str, float]:
  """Test loss and accuracy with the config's test-time views; run after the
  last epoch only, since nine views cost nine evaluations."""
  metrics = evaluate(make_eval_fn(mesh, tta.config_views(config)), state,
                     test_batches)
  return {'test_loss_tta': metrics['loss'],
          'test_accuracy_tta': metrics['accuracy']}


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its newest readable checkpoint.

  Returns the final epoch's metrics (the last line of metrics.jsonl). Raises
  workdir.WorkdirBusy if another run holds the workdir, and
  interrupts.Interrupted, once a checkpoint is saved, on SIGINT or SIGTERM.
  """
  start_time = time.time()
  config_lib.validate_config(config)
  config = _with_absolute_paths(config)
  models.create_model(config)  # checks model_kwargs before any data is read
  mesh = parallel.create_mesh()
  parallel.check_divisible(config.batch_size, mesh, 'config.batch_size')
  train_split = data_lib.load_split(config, 'train')
  test_split = data_lib.load_split(config, 'test')
  steps_per_epoch = len(train_split) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'config.batch_size={config.batch_size} is larger than '
                     f'the {len(train_split)} training examples')
  io_utils.ensure_writable_dir(workdir)  # only once the inputs are known good
  logging.info('%d training and %d test examples, %d steps per epoch on %d '
               'device(s)', len(train_split), len(test_split), steps_per_epoch,
               mesh.size)
  with workdir_lib.locked(workdir, workdir_lib.TRAIN):
    return _train(config, workdir, mesh, train_split, test_split, start_time)


def _train(config: ml_collections.ConfigDict, workdir: str,
           mesh: jax.sharding.Mesh, train_split: data_lib.Split,
           test_split: data_lib.Split, start_time: float) -> dict[str, float]:
  steps_per_epoch = len(train_split) // config.batch_size
  replicated = parallel.replicated(mesh)
  batches_sharding = parallel.stacked_batches_sharding(mesh)
  rng = jax.random.PRNGKey(config.seed)
  init = trace_state_for_config(config, steps_per_epoch, rng, replicated)
  totals = jax.device_put(zero_totals(), replicated)
  test_batches = batches_lib.device_eval_batches(
      test_split, parallel.device_batch_size(config.eval_batch_size, mesh.size),
      batches_sharding)
  # The steps compile on a second thread from the state's shapes: the train
  # step while this one creates (or restores) the state, the eval step while
  # the first epoch trains. The loop calls these executables.
  compiler = concurrent.futures.ThreadPoolExecutor(1)
  train_step = compile_in_background(
      compiler, make_train_fn(config, mesh), init.out_info, totals,
      batches_lib.train_batches_like(train_split, config.batch_size,
                                     batches_sharding), 0)
  eval_step = compile_in_background(compiler, make_eval_fn(mesh),
                                    init.out_info, totals, test_batches, 0)
  checkpoints = log = None
  try:
    checkpoints = checkpoint_lib.Checkpoints(workdir, config)
    if checkpoints.latest_step() is None:
      state = init.lower().compile()(rng)
    else:
      state, totals = checkpoints.restore(init.out_info, totals, replicated)
      logging.info('resumed from the checkpoint of step %d', int(state.step))
    start_step = int(state.step)
    log = metrics_log.MetricsLog(workdir,
                                 resume_after_epoch=start_step // steps_per_epoch)
    log.write_hparams(config)
    progress = _Progress(
        log, config.log_every_steps or max(steps_per_epoch // 10, 1),
        config.num_epochs * steps_per_epoch, config.batch_size,
        optim.create_learning_rate_schedule(config, steps_per_epoch))
    summary = log.last()
    # A resumed run's clock goes on from its last logged epoch (the time
    # spent in an interrupted epoch is lost with it).
    elapsed_before = summary.get('elapsed', 0.0)
    with interrupts.StopRequests() as stop:
      for epoch in range(start_step // steps_per_epoch + 1,
                         config.num_epochs + 1):
        rows = batches_lib.epoch_rows(len(train_split), config.batch_size,
                                      config.seed, epoch)
        batches = batches_lib.device_train_batches(train_split, rows,
                                                   batches_sharding)
        state, totals = _train_epoch(train_step.result(), state, totals,
                                     batches, epoch, config, checkpoints,
                                     progress, stop)
        train_metrics = summarize(totals)
        test_metrics = evaluate(eval_step.result(), state, test_batches)
        summary = {'epoch': epoch,
                   'train_loss': train_metrics['loss'],
                   'train_accuracy': train_metrics['accuracy'],
                   'test_loss': test_metrics['loss'],
                   'test_accuracy': test_metrics['accuracy'],
                   'test_examples': test_metrics['count']}
        if config.tta and epoch == config.num_epochs:
          summary.update(_tta_metrics(config, mesh, state, test_batches))
        summary['elapsed'] = elapsed_before + time.time() - start_time
        log.write(summary)
        totals = jax.device_put(zero_totals(), replicated)
        checkpoints.save(int(state.step), state, totals)
        if epoch < config.num_epochs and stop.stop_now(sync_point=True):
          raise stop.interrupted(_resume_hint(checkpoints, int(state.step)))
  finally:  # also on a divergence or a full disk: pending saves finish
    compiler.shutdown(cancel_futures=True)
    if checkpoints is not None:
      checkpoints.close()
    if log is not None:
      log.close()
  return summary
