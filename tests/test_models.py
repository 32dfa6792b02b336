"""Model shapes, features, the pooling rewrites and their gradients, space-to-depth, and the
registry (models.py). Shapes come from jax.eval_shape: nothing compiles.
Bad model_kwargs are rows of test_cli's table."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import best, cnn, default, fast, mlp
from mnist_jax import models
from mnist_jax import tensorflow_env

IMAGES = jax.ShapeDtypeStruct((3, 28, 28, 1), jnp.float32)


def _params_shapes(model: nn.Module):
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), IMAGES)['params']


@pytest.mark.parametrize('get_config, feature_dim', [
    (default.get_config, 256), (fast.get_config, 256), (best.get_config, 256),
    (lambda: best.get_config('s2d'), 128),
    (lambda: best.get_config('wide'), 128), (cnn.get_config, 256),
    (mlp.get_config, 128)])
def test_logits_and_features_shapes(get_config, feature_dim):
  model = models.create_model(get_config())

  def apply(rng, images):
    variables = model.init(rng, images)
    return model.apply(variables, images), model.apply(
        variables, images, return_features=True)

  logits, (logits_again, features) = jax.eval_shape(
      apply, jax.random.PRNGKey(0), IMAGES)
  assert logits.shape == logits_again.shape == (3, 10)
  assert logits.dtype == jnp.float32
  assert features.shape == (3, feature_dim)


def test_return_features_changes_no_logit(mlp_state):
  images = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 28, 28, 1)),
                       jnp.float32)
  variables = {'params': mlp_state.params}
  logits = mlp_state.apply_fn(variables, images)
  logits_again, features = mlp_state.apply_fn(variables, images,
                                              return_features=True)
  np.testing.assert_array_equal(logits, logits_again)
  assert features.shape == (3, 16)


def test_cnn_matches_flax_example_parameter_count():
  params = _params_shapes(models.create_model(cnn.get_config()))
  # conv 3x3x1x32 + conv 3x3x32x64 + dense 3136x256 + dense 256x10, with biases.
  expected = (9 * 32 + 32) + (9 * 32 * 64 + 64) + (3136 * 256 + 256) + (2570)
  assert sum(p.size for p in jax.tree.leaves(params)) == expected


def test_relu_equals_flax_relu_and_its_gradient():
  x = jnp.asarray([-2.0, -0.0, 0.0, 1e-30, 3.0, jnp.inf, -jnp.inf, jnp.nan])
  np.testing.assert_array_equal(models.relu(x), nn.relu(x))  # NaN stays NaN
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x)))(x[:-1])
  np.testing.assert_array_equal(grad(models.relu), grad(nn.relu))  # 0 at 0


def _flax_pool(flax_pool, padding='VALID'):
  return lambda x: flax_pool(x, (2, 2), strides=(2, 2), padding=padding)


@pytest.mark.parametrize('pool, flax_pool, x', [
    pytest.param(models.max_pool_2x2, _flax_pool(nn.max_pool),
                 np.random.default_rng(1).normal(size=(2, 8, 6, 3)), id='max'),
    pytest.param(models.max_pool_2x2, _flax_pool(nn.max_pool),
                 np.random.default_rng(1).integers(-1, 2, size=(2, 8, 6, 3)),
                 id='max-ties'),  # most windows hold ties
    pytest.param(models.max_pool_2x2_ceil,
                 _flax_pool(nn.max_pool, ((0, 1), (0, 1))),
                 np.random.default_rng(2).normal(size=(2, 7, 5, 3)) - 1,
                 id='max-ceil-odd-negative'),  # keeps the last row and column
    pytest.param(models.max_pool_2x2_floor, _flax_pool(nn.max_pool),
                 np.random.default_rng(2).normal(size=(2, 7, 5, 3)),
                 id='max-floor-odd'),  # drops the last row and column
    pytest.param(models.avg_pool_2x2, _flax_pool(nn.avg_pool),
                 np.random.default_rng(1).normal(size=(2, 8, 6, 3)), id='avg'),
])
def test_pool_equals_flax_pooling_and_its_gradient(pool, flax_pool, x):
  """Same values and gradients; for max pooling exactly, ties included (the
  gradient goes to each window's first maximum, as select_and_scatter's)."""
  x = jnp.asarray(x, jnp.float32)
  expected = flax_pool(x)
  weights = jnp.asarray(np.random.default_rng(3).normal(size=expected.shape),
                        jnp.float32)
  grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(f(x) * weights)))(x)
  rtol = 1e-6 if pool is models.avg_pool_2x2 else 0
  np.testing.assert_allclose(pool(x), expected, rtol=rtol, atol=0)
  np.testing.assert_allclose(grad(pool), grad(flax_pool), rtol=rtol, atol=0)


def test_pool_before_norm_normalizes_the_pooled_convolution():
  model = models.ConvNet(widths=(4,), convs_per_stage=1, dense=8, dropout=0.0,
                         downsample='pool_before_norm')
  images = jnp.asarray(np.random.default_rng(4).uniform(size=(3, 28, 28, 1)),
                       jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), images)
  _, updates = model.apply(variables, images, train=True,
                           mutable=['batch_stats'])
  conv = nn.Conv(4, (3, 3), use_bias=False).apply(
      {'params': variables['params']['Conv_0']}, images)
  pooled = nn.max_pool(conv, (2, 2), strides=(2, 2))
  # The running mean moved a tenth (momentum 0.9) of the way to the batch
  # mean of the pooled, not the full-resolution, activations.
  np.testing.assert_allclose(updates['batch_stats']['BatchNorm_0']['mean'],
                             0.1 * pooled.mean(axis=(0, 1, 2)), rtol=1e-5)
  assert model.apply(variables, images).shape == (3, 10)


def _conv_kernel_shapes(model: nn.Module) -> list[tuple[int, ...]]:
  params = _params_shapes(model)
  return [params[f'Conv_{i}']['kernel'].shape
          for i in range(sum(name.startswith('Conv_') for name in params))]


def test_convnet_conv_counts_per_stage():
  model = models.ConvNet(widths=(4, 8, 16), convs_per_stage=(1, 1, 2))
  assert _conv_kernel_shapes(model) == [(3, 3, 1, 4), (3, 3, 4, 8),
                                        (3, 3, 8, 16), (3, 3, 16, 16)]
  same_for_all = models.ConvNet(widths=(4, 8), convs_per_stage=2)
  assert _conv_kernel_shapes(same_for_all) == [(3, 3, 1, 4), (3, 3, 4, 4),
                                               (3, 3, 4, 8), (3, 3, 8, 8)]


@pytest.mark.slow  # imports TensorFlow
def test_space_to_depth_matches_tensorflow():
  tf = tensorflow_env.import_tensorflow()
  x = np.random.default_rng(3).normal(size=(2, 6, 4, 3)).astype(np.float32)
  np.testing.assert_array_equal(models.space_to_depth(jnp.asarray(x)),
                                tf.nn.space_to_depth(x, 2).numpy())


def test_convnet_valid_padding_shrinks_every_convolution_and_pool():
  model = models.create_model(fast.get_config())
  assert model.padding == 'VALID'
  # 28 -> conv 26 -> pool 13 -> conv 11 -> pool 5 (the odd row dropped).
  params = _params_shapes(model)
  assert params['Dense_0']['kernel'].shape == (5 * 5 * 32, 256)
  same = models.ConvNet(widths=(16, 32), convs_per_stage=1, dense=256,
                        downsample='pool_before_norm')
  assert _params_shapes(same)['Dense_0']['kernel'].shape == (7 * 7 * 32, 256)


@pytest.mark.parametrize('kwargs, error', [
    ({'widths': (8, 8, 8), 'downsample': 'pool_before_norm'}, None),  # 1x1
    ({'widths': (8, 8, 8), 'convs_per_stage': (1, 1, 2)},
     'leaves no pixels for the dense layer'),  # ... 3 -> conv 1 -> pool 0
    ({'widths': (8, 8), 'convs_per_stage': 2, 'downsample': 'space_to_depth'},
     'leaves no pixels for the dense layer'),  # ... 3 -> conv 1 -> pool 0
    ({'widths': (8, 8, 8), 'downsample': 'space_to_depth'},
     'leaves 2x2 pixels for convolution 2'),  # 28 -> 14 -> 12 -> 6 -> 4 -> 2
])
def test_valid_padding_refuses_networks_that_shrink_the_images_away(kwargs,
                                                                    error):
  kwargs = {'convs_per_stage': 1, 'dense': 16, 'padding': 'VALID', **kwargs}
  if error:
    with pytest.raises(ValueError, match=f'model_kwargs.padding: .*{error}'):
      models.ConvNet(**kwargs)
  else:
    params = _params_shapes(models.ConvNet(**kwargs))
    assert params['Dense_0']['kernel'].shape == (1 * 1 * 8, 16)


def test_space_to_depth_pads_odd_sizes_with_zeros():
  x = jnp.arange(1.0, 1 + 7 * 7 * 2).reshape(1, 7, 7, 2)
  y = models.space_to_depth(x)
  assert y.shape == (1, 4, 4, 8)
  even = models.space_to_depth(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))
  np.testing.assert_array_equal(y, even)
  assert int(jnp.sum(y == 0)) == (8 * 8 - 7 * 7) * 2  # only the padding


def test_convnet_space_to_depth_stages():
  model = models.ConvNet(widths=(4, 16), convs_per_stage=(1, 2), dense=32,
                         downsample='space_to_depth')
  # 28x28x1 -> 14x14x4 -> conv 4 -> 7x7x16 -> conv 16, conv 16 -> pool 4x4x16.
  assert _conv_kernel_shapes(model) == [(3, 3, 4, 4), (3, 3, 16, 16),
                                        (3, 3, 16, 16)]
  assert _params_shapes(model)['Dense_0']['kernel'].shape == (4 * 4 * 16, 32)


def test_registry_builds_each_model_from_its_config():
  assert isinstance(models.create_model(default.get_config()), models.ConvNet)
  assert isinstance(models.create_model(cnn.get_config()), models.CNN)
  assert isinstance(models.create_model(mlp.get_config()), models.MLP)
  assert models.create_model(mlp.get_config()).hidden == 128
