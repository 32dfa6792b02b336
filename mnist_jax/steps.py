"""The train state and the pure train, eval and predict steps.

Everything here is a function of explicit arguments and works under
`jax.jit` on one device or many: no config, no files, no host reads.

Images are `[B, 28, 28, 1]`, either uint8 in [0, 255] (the data as stored)
or floating point in [0, 1]; any other dtype is refused when the step is
traced. Labels are integer class ids `[B]`. Metrics are sums, not means, so
that batches of different sizes add up exactly.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from mnist_jax import augment
from mnist_jax import tta
from mnist_jax import xla_cpu
from mnist_jax.data import IMAGE_SHAPE, NUM_CLASSES

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """Params and optimizer state (from flax), plus BN statistics, a key and
  an optional moving average of the weights.

  Per-step randomness (augmentation, dropout) is `fold_in(rng, step)`, so a
  resumed run draws the same numbers as an uninterrupted one. `ema` is
  `{'params', 'batch_stats'}` averaged over steps when the state was created
  with `ema=True` (evaluation and prediction then use it), and `{}` otherwise.
  """
  batch_stats: Any
  rng: jax.Array
  ema: Any = flax.struct.field(default_factory=dict)


# The state's initialisation runs once: compiled without XLA's backend
# optimizations and with the steps' options, in a fraction of the time, the
# same weights (docs/performance.md).
_INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0,
                          **xla_cpu.STEP_COMPILER_OPTIONS}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       rng: jax.Array, *, ema: bool = False,
                       sharding: jax.sharding.Sharding | None = None) -> TrainState:
  """A fresh state for `model` and any optax transformation `tx`.

  Built by one compiled computation (placed on `sharding`): run eagerly,
  initialisation would compile dozens of small programs.
  """
  return trace_train_state(model, tx, rng, ema=ema,
                           sharding=sharding).lower().compile()(rng)


def trace_train_state(model: nn.Module, tx: optax.GradientTransformation,
                      rng: jax.Array, *, ema: bool = False,
                      sharding: jax.sharding.Sharding | None = None
                      ) -> jax.stages.Traced:
  """`create_train_state`'s computation, traced but not compiled.

  Its `out_info` is the state's shapes and shardings, known in milliseconds,
  before any weights exist (to compile a step for them, or to restore a
  checkpoint); `.lower().compile()(rng)` creates the state. It runs once,
  so it is compiled for a short compilation, not a fast run.
  """

  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init(init_rng, jnp.zeros((1,) + IMAGE_SHAPE))
    batch_stats = variables.get('batch_stats', {})
    average = ({'params': variables['params'], 'batch_stats': batch_stats}
               if ema else {})
    return TrainState.create(
        apply_fn=model.apply, params=variables['params'], tx=tx,
        batch_stats=batch_stats, rng=state_rng, ema=average)

  return jax.jit(init, out_shardings=sharding,
                 compiler_options=_INIT_COMPILER_OPTIONS).trace(rng)


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] images as float32 [0, 1]; float images as they are.

  Raises TypeError for any other dtype (int32 pixels, say), which would
  otherwise be scaled wrongly without a sign.
  """
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  if jnp.issubdtype(images.dtype, jnp.floating):
    return images.astype(jnp.float32)
  raise TypeError(f'images must be uint8 in [0, 255] or float in [0, 1], '
                  f'got dtype {images.dtype}')


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy against (optionally smoothed) one-hot labels."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, NUM_CLASSES),
                                label_smoothing)
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
  """One optimizer step on `batch` ('image', 'label'; see the module doc).

  Returns the new state and the batch's summed loss ('loss_sum', unsmoothed,
  on the augmented images), correct count and example count.
  """
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
  """Summed loss, correct count and count over the batch, predicting from
  `views` of each image (tta.py). An optional 0/1 'mask' leaves padding
  examples out of all three."""
  variables = inference_variables(state)
  logits = tta.averaged_logits(lambda x: state.apply_fn(variables, x),
                               to_float(batch['image']), views)
  mask = batch.get('mask')
  if mask is None:
    mask = jnp.ones(batch['label'].shape, jnp.float32)
  return {
      'loss_sum': jnp.sum(cross_entropy(logits, batch['label']) * mask),
      'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * mask),
      'count': jnp.sum(mask),
  }


def predict_step(state: TrainState, images: jax.Array,
                 views: tuple[tta.View, ...] = tta.IDENTITY) -> dict[str, jax.Array]:
  """Class probabilities (from `views` of each image) and penultimate
  features (of the image as it is)."""
  variables = inference_variables(state)
  images = to_float(images)
  plain_logits, features = state.apply_fn(variables, images,
                                          return_features=True)
  logits = tta.average([
      plain_logits if view == tta.View() else
      state.apply_fn(variables, tta.apply_view(images, view))
      for view in views])
  return {'probabilities': jax.nn.softmax(logits), 'features': features}
