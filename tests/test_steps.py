"""The train state and the pure steps (steps.py), the optimizers and
schedules a config names (optim.py), and the package's top-level names."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mnist_jax
from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import models
from mnist_jax import optim
from mnist_jax import steps

from conftest import CLIPPED_SGD, tiny_state_and_batch, write_idx_folder

_train_step = jax.jit(steps.train_step,
                      static_argnames=('augmentation', 'ema_decay'))


def train_step(state, batch, label_smoothing=0.0, **static):
  """steps.train_step, jitted; label_smoothing always passed, so that a call
  with it and one without share a compilation."""
  return _train_step(state, batch, label_smoothing=label_smoothing, **static)
eval_step = jax.jit(steps.eval_step, static_argnames='views')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return write_idx_folder(tmp_path_factory.mktemp('idx'))


@pytest.fixture(scope='module')
def batch(data_dir):
  """64 training examples, uint8 images as stored."""
  split = data_lib.load_idx_split(data_dir, 'train')
  return {'image': jnp.asarray(split.images[:64]),
          'label': jnp.asarray(split.labels[:64])}


@pytest.fixture(scope='module')
def state(mlp_state):
  return mlp_state


def _mean_loss(metrics) -> float:
  return float(metrics['loss_sum']) / int(metrics['count'])


# ------------------------------------------------------------- train state


def test_create_train_state_takes_any_optax_transformation(state, batch):
  """An update clipped to a global norm of 1e-3 moves the weights by
  exactly that much: the step applies the transformation it was given."""
  assert int(state.step) == 0 and state.ema == {} and state.batch_stats == {}
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(
      CLIPPED_SGD.init(state.params))
  new_state, _ = train_step(state, batch)
  moved = optax.global_norm(jax.tree.map(jnp.subtract, new_state.params,
                                         state.params))
  assert int(new_state.step) == 1
  assert float(moved) == pytest.approx(1e-3, rel=1e-4)


def test_trace_train_state_knows_the_state_before_it_exists(state):
  traced = steps.trace_train_state(models.MLP(hidden=16), CLIPPED_SGD,
                                   jax.random.PRNGKey(0))
  spec = jax.tree.leaves(traced.out_info)
  assert [(s.shape, s.dtype) for s in spec] == [
      (a.shape, a.dtype) for a in jax.tree.leaves(state)]
  created = traced.lower().compile()(jax.random.PRNGKey(0))
  for a, b in zip(jax.tree.leaves(created), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_ema_starts_at_the_weights_follows_them_and_is_what_evaluation_uses(
    state, batch):
  with_ema = steps.create_train_state(models.MLP(hidden=16), CLIPPED_SGD,
                                      jax.random.PRNGKey(0), ema=True)
  # The same key draws the same weights, with or without the average.
  assert jax.tree.all(jax.tree.map(jnp.array_equal, with_ema.params,
                                   state.params))
  assert jax.tree.all(jax.tree.map(jnp.array_equal, with_ema.ema,
                                   {'params': state.params, 'batch_stats': {}}))
  new, _ = train_step(with_ema, batch, ema_decay=0.99)
  # After the first update the decay is ramped to min(0.99, 2 / 11).
  expected = jax.tree.map(lambda old, now: (2 * old + 9 * now) / 11,
                          with_ema.params, new.params)
  assert jax.tree.all(jax.tree.map(
      lambda a, b: jnp.allclose(a, b, atol=1e-7), new.ema['params'], expected))
  assert not jax.tree.all(jax.tree.map(jnp.allclose, new.ema['params'],
                                       new.params))
  logits = new.apply_fn(new.ema, steps.to_float(batch['image']))
  expected_loss = float(steps.cross_entropy(logits, batch['label']).sum())
  assert float(eval_step(new, batch)['loss_sum']) == pytest.approx(
      expected_loss, rel=1e-6)
  without = new.apply_fn({'params': new.params},
                         steps.to_float(batch['image']))
  assert float(steps.cross_entropy(without, batch['label']).sum()) != (
      pytest.approx(expected_loss, rel=1e-6))


# ------------------------------------------------------------- train_step


def test_uint8_and_float_images_give_the_same_step(state, batch):
  as_float = dict(batch, image=batch['image'].astype(jnp.float32) / 255.0)
  uint8_state, uint8_metrics = train_step(state, batch)
  float_state, float_metrics = train_step(state, as_float)
  assert float(float_metrics['loss_sum']) == pytest.approx(
      float(uint8_metrics['loss_sum']), rel=1e-6)
  assert int(float_metrics['correct']) == int(uint8_metrics['correct'])
  for a, b in zip(jax.tree.leaves(uint8_state), jax.tree.leaves(float_state)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  uint8_eval, float_eval = eval_step(state, batch), eval_step(state, as_float)
  for key in ('loss_sum', 'correct', 'count'):
    assert float(float_eval[key]) == pytest.approx(float(uint8_eval[key]),
                                                   rel=1e-6)


def test_integer_images_other_than_uint8_are_refused(state, batch):
  wrong = dict(batch, image=batch['image'].astype(jnp.int32))
  message = ('images must be uint8 in \\[0, 255\\] or float in \\[0, 1\\], '
             'got dtype int32')
  with pytest.raises(TypeError, match=message):
    train_step(state, wrong)
  with pytest.raises(TypeError, match=message):
    eval_step(state, wrong)
  with pytest.raises(TypeError, match=message):
    steps.predict_step(state, wrong['image'])


def test_label_smoothing_changes_the_update_not_the_reported_loss(state, batch):
  plain, plain_metrics = train_step(state, batch)
  smooth, smooth_metrics = train_step(state, batch, label_smoothing=0.1)
  # The logged loss is the plain cross-entropy of the same forward pass.
  assert float(smooth_metrics['loss_sum']) == pytest.approx(
      float(plain_metrics['loss_sum']), rel=1e-6)
  differences = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                             plain.params, smooth.params)
  assert max(jax.tree.leaves(differences)) > 1e-7


@pytest.mark.slow
@pytest.mark.parametrize('model', ['mlp', 'cnn', 'convnet_s2d'])
def test_every_model_lowers_the_loss(data_dir, model):
  """Five Adam steps on one batch; batch norm statistics move too.
  conftest's tiny convnet learns in its trained run (test_train)."""
  overrides = {'model': model, 'schedule': 'constant', 'learning_rate': 0.003}
  if model == 'convnet_s2d':
    overrides.update(model='convnet', model_kwargs={
        'widths': (16, 64), 'convs_per_stage': (1, 1),
        'downsample': 'space_to_depth'})
  else:
    overrides['model_kwargs'] = {}
  _, initial, batch = tiny_state_and_batch(data_dir, **overrides)
  state, losses = initial, []
  for _ in range(5):
    state, metrics = train_step(state, batch)
    losses.append(_mean_loss(metrics))
  assert int(state.step) == 5
  assert losses[-1] < 0.7 * losses[0], losses
  for before, after in zip(jax.tree.leaves(initial.batch_stats),
                           jax.tree.leaves(state.batch_stats)):
    assert not np.allclose(before, after)


# -------------------------------------------------------------- eval_step


def test_eval_step_counts_every_example_unless_masked(state, batch):
  logits = state.apply_fn({'params': state.params},
                          steps.to_float(batch['image']))
  losses = np.asarray(steps.cross_entropy(logits, batch['label']))
  correct = np.asarray(jnp.argmax(logits, -1) == batch['label'])

  unmasked = eval_step(state, batch)
  assert int(unmasked['count']) == 64
  assert float(unmasked['loss_sum']) == pytest.approx(losses.sum(), rel=1e-5)
  assert int(unmasked['correct']) == correct.sum()

  mask = np.arange(64) % 3 == 0  # 22 of the 64
  masked = eval_step(state, dict(batch, mask=jnp.asarray(mask, jnp.float32)))
  assert int(masked['count']) == 22
  assert float(masked['loss_sum']) == pytest.approx(losses[mask].sum(),
                                                    rel=1e-5)
  assert int(masked['correct']) == correct[mask].sum()


def test_predict_step_gives_probabilities_and_features(state, batch):
  outputs = jax.jit(steps.predict_step)(state, batch['image'])
  assert outputs['probabilities'].shape == (64, 10)
  assert outputs['features'].shape == (64, 16)  # the MLP's hidden layer
  np.testing.assert_allclose(outputs['probabilities'].sum(-1), 1.0, atol=1e-5)


# ------------------------------------------- optimizers and schedules (optim)


@pytest.mark.parametrize('name, reference', [
    ('sgd', lambda lr: optax.sgd(lr)),
    ('momentum', lambda lr: optax.sgd(lr, momentum=0.8)),
    ('nesterov', lambda lr: optax.sgd(lr, momentum=0.8, nesterov=True)),
    ('adam', optax.adam),
    ('adamw', lambda lr: optax.adamw(lr, weight_decay=0.01)),
])
def test_each_optimizer_name_is_its_optax_transformation(name, reference):
  """Three updates of a config's optimizer equal optax's own, with the
  config's momentum and weight decay."""
  config = config_lib.default_config()
  config.update(optimizer=name, schedule='constant', learning_rate=0.1,
                momentum=0.8, weight_decay=0.01)
  ours, theirs = optim.create_optimizer(config, 10), reference(0.1)
  params = {'w': jnp.array([1.0, -2.0, 3.0]), 'b': jnp.array([0.5])}
  grads = {'w': jnp.array([0.3, -1.0, 2.0]), 'b': jnp.array([-0.7])}
  our_state, their_state = ours.init(params), theirs.init(params)
  for _ in range(3):
    our_updates, our_state = ours.update(grads, our_state, params)
    their_updates, their_state = theirs.update(grads, their_state, params)
    for a, b in zip(jax.tree.leaves(our_updates),
                    jax.tree.leaves(their_updates)):
      np.testing.assert_allclose(a, b, rtol=1e-6)
    params = optax.apply_updates(params, our_updates)


@pytest.mark.parametrize('schedule, checks', [
    # (step, expected learning rate) from each schedule's definition; 2
    # epochs of 10 steps, peak 0.1, warm-up 0.5 epochs.
    ('constant', [(0, 0.1), (19, 0.1)]),
    ('cosine', [(0, 0.1), (10, 0.05), (20, 0.0)]),
    ('warmup_cosine', [(0, 0.0), (5, 0.1), (20, 0.0)]),
    ('onecycle', [(6, 0.1), (20, 0.0)]),
])
def test_learning_rate_schedules(schedule, checks):
  config = config_lib.default_config()
  config.update(schedule=schedule, learning_rate=0.1, num_epochs=2,
                warmup_epochs=0.5)
  lr = optim.create_learning_rate_schedule(config, steps_per_epoch=10)
  lr_fn = jax.jit(lr)  # one compilation, not one per operation
  rates = np.array([lr_fn(step) for step in range(21)])
  for step, expected in checks:
    assert rates[step] == pytest.approx(expected, abs=1e-6), step
  if schedule == 'onecycle':  # starts low, peaks at the learning rate
    assert rates[0] < 0.01 and rates.max() == pytest.approx(0.1)


def test_warmup_cosine_with_one_step_per_epoch():
  """Inference rebuilds the optimizer with one step per epoch."""
  config = config_lib.default_config()
  config.update(schedule='warmup_cosine', num_epochs=1, warmup_epochs=0.5)
  schedule = optim.create_learning_rate_schedule(config, steps_per_epoch=1)
  assert all(math.isfinite(float(schedule(step))) for step in range(3))


# --------------------------------------------------------------- the package


def test_top_level_names():
  assert mnist_jax.train_step is steps.train_step
  assert mnist_jax.eval_step is steps.eval_step
  assert mnist_jax.predict_step is steps.predict_step
  assert mnist_jax.create_train_state is steps.create_train_state
  assert mnist_jax.TrainState is steps.TrainState
  assert mnist_jax.ConvNet is models.ConvNet
  assert mnist_jax.default_config().keys() == config_lib.default_config().keys()
  for name in mnist_jax.__all__:
    assert getattr(mnist_jax, name) is not None, name
