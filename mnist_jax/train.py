"""Train state, the jitted train and eval steps, and the training loop.

Reads top to bottom: state, loss, `train_step`, `eval_step`, data placement,
`train_and_evaluate`. Steps are pure functions of explicit arguments; the
loop only feeds them, checkpoints and logs. Metrics are sums over examples
divided by the true count at the end of an epoch, and the test set is padded
and masked so that every test example counts exactly once.
"""

import functools
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state

from mnist_jax import augment
from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import config_checks
from mnist_jax import data as data_lib
from mnist_jax import io_utils
from mnist_jax import metrics_log
from mnist_jax import models
from mnist_jax import optim
from mnist_jax import parallel
from mnist_jax import tta
from mnist_jax.errors import UserError

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """Params and optimizer state (from flax), plus BN statistics, a key and
  an optional moving average of the weights.

  Per-step randomness (augmentation, dropout) is `fold_in(rng, step)`, so a
  resumed run draws the same numbers as an uninterrupted one. `ema` is
  `{'params', 'batch_stats'}` averaged over steps when `config.ema_decay` > 0
  (evaluation and prediction then use it), and `{}` otherwise.
  """
  batch_stats: Any
  rng: jax.Array
  ema: Any = flax.struct.field(default_factory=dict)


def create_train_state(model: nn.Module, config: ml_collections.ConfigDict,
                       steps_per_epoch: int, rng: jax.Array,
                       sharding: jax.sharding.Sharding | None = None) -> TrainState:
  """A fresh state, built by one compiled computation (placed on `sharding`).

  Run eagerly, initialisation would compile dozens of small programs.
  """
  tx = optim.create_optimizer(config, steps_per_epoch)

  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init(init_rng, jnp.zeros((1,) + data_lib.IMAGE_SHAPE))
    batch_stats = variables.get('batch_stats', {})
    ema = ({'params': variables['params'], 'batch_stats': batch_stats}
           if config.ema_decay else {})
    return TrainState.create(
        apply_fn=model.apply, params=variables['params'], tx=tx,
        batch_stats=batch_stats, rng=state_rng, ema=ema)

  return jax.jit(init, out_shardings=sharding)(rng)


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] images to float32 [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy against (optionally smoothed) one-hot labels."""
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, data_lib.NUM_CLASSES), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def _variables(state: TrainState, params: Any) -> dict[str, Any]:
  return {'params': params, 'batch_stats': state.batch_stats}


def inference_variables(state: TrainState) -> dict[str, Any]:
  """The weights evaluation and prediction use: the moving average if kept."""
  return state.ema or _variables(state, state.params)


def update_ema(state: TrainState, decay: float) -> TrainState:
  """Moves `state.ema` towards the current weights.

  The decay ramps up as min(decay, (1 + n) / (10 + n)) after the n-th update
  (as in tf.train.ExponentialMovingAverage), so early averages are not
  dominated by the random initialisation.
  """
  step = state.step.astype(jnp.float32)
  decay = jnp.minimum(decay, (1 + step) / (10 + step))
  ema = optax.incremental_update(_variables(state, state.params), state.ema,
                                 1 - decay)
  return state.replace(ema=ema)


def train_step(state: TrainState, batch: Batch, *, label_smoothing: float = 0.0,
               augmentation: augment.Augmentation = augment.Augmentation(),
               ema_decay: float = 0.0) -> tuple[TrainState, Metrics]:
  """One optimizer step on `batch` (uint8 'image', int32 'label')."""
  augment_rng, dropout_rng = jax.random.split(
      jax.random.fold_in(state.rng, state.step))
  images = augment.augment(to_float(batch['image']), augment_rng, augmentation)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        _variables(state, params), images, train=True,
        rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
    loss = cross_entropy(logits, batch['label'], label_smoothing).mean()
    return loss, (logits, updates)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, (logits, updates)), grads = grad_fn(state.params)
  state = state.apply_gradients(
      grads=grads, batch_stats=updates.get('batch_stats', state.batch_stats))
  if ema_decay:
    state = update_ema(state, ema_decay)
  metrics = {
      'loss_sum': cross_entropy(logits, batch['label']).sum(),
      'correct': jnp.sum(jnp.argmax(logits, -1) == batch['label']),
      'count': jnp.asarray(batch['label'].shape[0]),
  }
  return state, metrics


def eval_step(state: TrainState, batch: Batch,
              views: tuple[tta.View, ...] = tta.IDENTITY) -> Metrics:
  """Summed loss and correct count over the examples whose 'mask' is 1,
  predicting from `views` of each image (tta.py)."""
  variables = inference_variables(state)
  logits = tta.averaged_logits(lambda x: state.apply_fn(variables, x),
                               to_float(batch['image']), views)
  mask = batch['mask']
  return {
      'loss_sum': jnp.sum(cross_entropy(logits, batch['label']) * mask),
      'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * mask),
      'count': jnp.sum(mask),
  }


def predict_step(state: TrainState, images: jax.Array,
                 views: tuple[tta.View, ...] = tta.IDENTITY) -> dict[str, jax.Array]:
  """Class probabilities (from `views` of each image) and penultimate
  features (of the image as it is) of uint8 images."""
  variables = inference_variables(state)
  images = to_float(images)
  plain_logits, features = state.apply_fn(variables, images,
                                          return_features=True)
  logits = tta.average([
      plain_logits if view == tta.View() else
      state.apply_fn(variables, tta.apply_view(images, view))
      for view in views])
  return {'probabilities': jax.nn.softmax(logits), 'features': features}


# ---------------------------------------------------------------- data layout


def epoch_rows(num_examples: int, batch_size: int, seed: int,
               epoch: int) -> np.ndarray:
  """Example positions [steps, batch] of one epoch, a function of seed and epoch.

  The incomplete last batch is dropped (a different one each epoch); test
  data never goes through here.
  """
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  steps = num_examples // batch_size
  return order[:steps * batch_size].reshape(steps, batch_size)


def padded_rows(num_examples: int, batch_size: int) -> np.ndarray:
  """Positions 0..N-1 in batches, the last batch padded with position N."""
  num_batches = -(-num_examples // batch_size)
  rows = np.full(num_batches * batch_size, num_examples)
  rows[:num_examples] = np.arange(num_examples)
  return rows.reshape(num_batches, batch_size)


def device_train_batches(split: data_lib.Split, rows: np.ndarray,
                         sharding: jax.sharding.Sharding) -> Batch:
  return {
      'image': parallel.stacked_batches(lambda r: split.images[r], rows, sharding),
      'label': parallel.stacked_batches(lambda r: split.labels[r], rows, sharding),
  }


def device_eval_batches(split: data_lib.Split, batch_size: int,
                        sharding: jax.sharding.Sharding) -> Batch:
  """Every example once, padded to whole batches, with a 0/1 'mask'."""
  images = np.concatenate([split.images, np.zeros_like(split.images[:1])])
  labels = np.append(split.labels, 0).astype(np.int32)
  mask = np.append(np.ones(len(split), np.float32), 0.0).astype(np.float32)
  rows = padded_rows(len(split), batch_size)
  return {
      'image': parallel.stacked_batches(lambda r: images[r], rows, sharding),
      'label': parallel.stacked_batches(lambda r: labels[r], rows, sharding),
      'mask': parallel.stacked_batches(lambda r: mask[r], rows, sharding),
  }


def num_batches(batches: Batch) -> int:
  return next(iter(batches.values())).shape[0]


# ------------------------------------------------------------ jitted wrappers


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
  """Jitted (state, totals, batches, i) -> (state, totals): step on batch i.

  The slice of batch i happens inside the computation, so the epoch's data
  stays on the device and a step costs one dispatch and no host transfer.
  """
  step_fn = functools.partial(train_step, label_smoothing=config.label_smoothing,
                              augmentation=augment.Augmentation.from_config(config),
                              ema_decay=config.ema_decay)

  def train_fn(state, totals, batches, i):
    batch = jax.tree.map(lambda a: a[i], batches)
    step = state.step
    state, metrics = step_fn(state, batch)
    return state, _add(totals, metrics, step)

  return jax.jit(train_fn, donate_argnums=(0, 1),
                 out_shardings=parallel.replicated(mesh))


def make_eval_fn(mesh: jax.sharding.Mesh,
                 views: tuple[tta.View, ...] = tta.IDENTITY):
  def eval_fn(state, totals, batches, i):
    metrics = eval_step(state, jax.tree.map(lambda a: a[i], batches), views)
    return _add(totals, metrics, jnp.zeros((), jnp.int32))
  return jax.jit(eval_fn, donate_argnums=1,
                 out_shardings=parallel.replicated(mesh))


def evaluate(eval_fn, state: TrainState, batches: Batch) -> dict[str, float]:
  """Loss, accuracy and count over every (unmasked) example of `batches`."""
  totals = zero_totals()
  for i in range(num_batches(batches)):
    totals = eval_fn(state, totals, batches, i)
  return summarize(totals)


def summarize(totals: Metrics) -> dict[str, float]:
  totals = jax.device_get(totals)
  count = int(totals['count'])
  return {'loss': float(totals['loss_sum']) / max(count, 1),
          'accuracy': float(totals['correct']) / max(count, 1),
          'count': count}


# ------------------------------------------------------------------- the loop


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def _check_finite(state: TrainState, totals: Metrics, checkpoint_dir: str) -> None:
  """Stops on a NaN or infinite loss, or weights: a step's loss is computed
  before its update, so an update that overflows shows only in the weights."""
  bad_step = int(jax.device_get(totals['nonfinite_step']))
  if bad_step >= 0:
    what = f'training loss at step {bad_step + 1}'
  elif not bool(jax.device_get(_all_finite(
      (state.params, state.batch_stats, state.ema)))):
    what = f'weights or statistics by step {int(state.step)}'
  else:
    return
  raise UserError(
      f'non-finite {what}; stopped without saving it, the last good '
      f'checkpoint stays in {checkpoint_dir} (lower --config.learning_rate?)')


def _log_progress(epoch: int, steps_run: int, step_in_epoch: int,
                  steps_per_epoch: int, totals: Metrics, epoch_start: float,
                  batch_size: int) -> None:
  """One progress line; `steps_run` counts this process's steps (for images/s)."""
  running = summarize(totals)
  seconds = max(time.time() - epoch_start, 1e-9)
  logging.info('epoch %d: %3d%% (%d/%d steps), train loss %.4f, accuracy '
               '%.4f, %.0f images/s', epoch, 100 * step_in_epoch // steps_per_epoch,
               step_in_epoch, steps_per_epoch, running['loss'],
               running['accuracy'], steps_run * batch_size / seconds)


def _with_absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy whose data folders resolve from anywhere (the checkpoint keeps it)."""
  config = config.copy_and_resolve_references()
  for key in ('data_dir', 'tfds_data_dir', 'tfds_manual_dir'):
    if config.get(key):
      config[key] = os.path.abspath(os.path.expanduser(config[key]))
  return config


def _train_epoch(train_fn, state: TrainState, totals: Metrics, batches: Batch,
                 epoch: int, config: ml_collections.ConfigDict,
                 checkpoints: checkpoint_lib.Checkpoints) -> tuple[TrainState, Metrics]:
  """Runs the rest of `epoch` from `state.step` (its start, or a resumed step).

  Syncs with the device only for progress lines and checkpoints.
  """
  steps_per_epoch = num_batches(batches)
  first = int(state.step) - (epoch - 1) * steps_per_epoch
  log_every = config.log_every_steps or max(steps_per_epoch // 10, 1)
  epoch_start = time.time()
  for i in range(first, steps_per_epoch):
    state, totals = train_fn(state, totals, batches, i)
    done, step = i + 1, (epoch - 1) * steps_per_epoch + i + 1
    if done == steps_per_epoch:
      break
    if done % log_every == 0:
      _check_finite(state, totals, checkpoints.directory)
      _log_progress(epoch, done - first, done, steps_per_epoch, totals,
                    epoch_start, config.batch_size)
    if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
      _check_finite(state, totals, checkpoints.directory)
      checkpoints.save(step, state, totals)
  _check_finite(state, totals, checkpoints.directory)
  return state, totals


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
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Returns the final epoch's metrics (the last line of metrics.jsonl).
  """
  start_time = time.time()
  config_checks.validate_config(config)
  config = _with_absolute_paths(config)
  model = models.create_model(config)
  mesh = parallel.create_mesh()
  parallel.check_divisible(config.batch_size, mesh, 'batch_size')
  train_split = data_lib.load_split(config, 'train')
  test_split = data_lib.load_split(config, 'test')
  steps_per_epoch = len(train_split) // config.batch_size
  if steps_per_epoch == 0:
    raise UserError(f'--config.batch_size={config.batch_size} is larger than '
                    f'the {len(train_split)} training examples')
  io_utils.ensure_writable_dir(workdir)  # only once the inputs are known good
  logging.info('%d training and %d test examples, %d steps per epoch on %d '
               'device(s)', len(train_split), len(test_split), steps_per_epoch,
               mesh.size)

  replicated = parallel.replicated(mesh)
  batches_sharding = parallel.stacked_batches_sharding(mesh)
  state = create_train_state(model, config, steps_per_epoch,
                             jax.random.PRNGKey(config.seed), replicated)
  totals = jax.device_put(zero_totals(), replicated)
  checkpoints = checkpoint_lib.Checkpoints(workdir, config)
  if checkpoints.latest_step() is not None:
    state, totals = checkpoints.restore(state, totals, replicated)
    logging.info('resumed from the checkpoint of step %d', int(state.step))
  start_step = int(state.step)
  log = metrics_log.MetricsLog(workdir, resume_after_epoch=start_step // steps_per_epoch)

  train_fn = make_train_fn(config, mesh)
  eval_fn = make_eval_fn(mesh)
  test_batches = device_eval_batches(
      test_split, parallel.device_batch_size(config.eval_batch_size, mesh.size),
      batches_sharding)
  summary = log.last()
  # A resumed run's clock goes on from its last logged epoch (the time spent
  # in an interrupted epoch is lost with it).
  elapsed_before = summary.get('elapsed', 0.0)
  for epoch in range(start_step // steps_per_epoch + 1, config.num_epochs + 1):
    rows = epoch_rows(len(train_split), config.batch_size, config.seed, epoch)
    batches = device_train_batches(train_split, rows, batches_sharding)
    state, totals = _train_epoch(train_fn, state, totals, batches, epoch,
                                 config, checkpoints)
    train_metrics = summarize(totals)
    test_metrics = evaluate(eval_fn, state, test_batches)
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
  checkpoints.close()
  log.close()
  return summary
