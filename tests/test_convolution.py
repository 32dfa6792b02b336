"""The one-channel convolutions (convolution.py) against lax's: values and
gradients for several kernels and paddings, when they apply and when lax's
convolution runs instead, and the Flax modules that use them (models.Conv,
models.ConvMaxPool) against nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from mnist_jax import convolution
from mnist_jax import models

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _values_and_grads(conv, x, kernel):
  out = conv(x, kernel)
  weights = _random(out.shape, 9)
  grads = jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) * weights),
                           argnums=(0, 1)))(x, kernel)
  return (out, *grads)


@pytest.mark.parametrize('kernel_shape, padding', [
    ((3, 3, 1, 16), 'SAME'),
    ((5, 5, 1, 4), 'VALID'),
    ((3, 5, 1, 1), ((2, 0), (0, 1))),  # uneven, one output channel
])
def test_one_channel_conv_equals_lax_conv_and_its_gradients(kernel_shape, padding):
  x = _random((3, 12, 10, 1), 1)
  kernel = _random(kernel_shape, 2)
  pads = (lax.padtype_to_pads(x.shape[1:3], kernel_shape[:2], (1, 1), padding)
          if isinstance(padding, str) else padding)
  expected = _values_and_grads(
      lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding,
                                            dimension_numbers=NHWC), x, kernel)
  actual = _values_and_grads(
      lambda x, k: convolution.one_channel_conv(x, k, tuple(pads)), x, kernel)
  for name, a, e in zip(('value', 'image gradient', 'kernel gradient'),
                        actual, expected):
    assert a.shape == e.shape, name
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, err_msg=name)


def _primitives(fn, *args) -> set[str]:
  return {str(eqn.primitive) for eqn in jax.make_jaxpr(fn)(*args).eqns}


@pytest.mark.parametrize('x_shape, kernel_shape, options, applies', [
    ((2, 8, 8, 1), (3, 3, 1, 4), {}, True),
    ((2, 8, 8, 3), (3, 3, 3, 4), {}, False),  # three input channels
    ((2, 8, 8, 1), (3, 3, 1, 4), {'window_strides': (2, 2)}, False),
    ((2, 8, 8, 1), (3, 3, 1, 4), {'rhs_dilation': (2, 2)}, False),
])
def test_conv_general_dilated_takes_the_one_channel_path_only_where_it_applies(
    x_shape, kernel_shape, options, applies):
  x, kernel = _random(x_shape, 3), _random(kernel_shape, 4)
  options = {'window_strides': (1, 1), 'padding': 'SAME',
             'dimension_numbers': lax.conv_dimension_numbers(
                 x_shape, kernel_shape, NHWC), **options}
  conv = lambda x, k: convolution.ConvGeneralDilated()(x, k, **options)
  primitives = _primitives(conv, x, kernel)
  assert ('conv_general_dilated' not in primitives) == applies, primitives
  np.testing.assert_allclose(conv(x, kernel),
                             lax.conv_general_dilated(x, kernel, **options),
                             rtol=1e-5, atol=1e-5)


def test_models_conv_has_nn_conv_parameters_values_and_gradients():
  images = _random((4, 28, 28, 1), 5)
  fast_conv, flax_conv = models.Conv(8, (3, 3)), nn.Conv(8, (3, 3))
  variables = fast_conv.init(jax.random.PRNGKey(0), images)
  flax_variables = flax_conv.init(jax.random.PRNGKey(0), images)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, flax_variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(flax_variables)):
    np.testing.assert_array_equal(a, b)  # the same initializers and draws
  loss = lambda conv: jax.grad(
      lambda v: jnp.sum(jnp.tanh(conv.apply(v, images))))(variables)
  np.testing.assert_allclose(fast_conv.apply(variables, images),
                             flax_conv.apply(variables, images), rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(loss(fast_conv)), jax.tree.leaves(loss(flax_conv))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _conv_then_pool(padding):
  def conv_pool(x, kernel):
    pads = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], (1, 1), padding)
    return models.max_pool_2x2(lax.conv_general_dilated(
        x, kernel, (1, 1), pads, dimension_numbers=NHWC))
  return conv_pool


@pytest.mark.parametrize('x_shape, kernel_shape, padding', [
    ((3, 12, 10, 1), (3, 3, 1, 8), 'SAME'),
    ((3, 12, 10, 1), (3, 3, 1, 8), 'VALID'),
    ((2, 10, 12, 1), (5, 3, 1, 4), 'VALID'),  # a 6x10 convolution
])
def test_one_channel_conv_max_pool_equals_conv_then_pool(x_shape, kernel_shape,
                                                         padding):
  x = _random(x_shape, 1)
  x = x.at[0].set(0.0)  # an image of ties: the gradient's rule shows
  kernel = _random(kernel_shape, 2)
  pads = tuple(lax.padtype_to_pads(x.shape[1:3], kernel_shape[:2], (1, 1),
                                   padding))
  expected = _values_and_grads(_conv_then_pool(padding), x, kernel)
  actual = _values_and_grads(
      lambda x, k: convolution.one_channel_conv_max_pool(x, k, pads), x, kernel)
  for name, a, e in zip(('value', 'image gradient', 'kernel gradient'),
                        actual, expected):
    assert a.shape == e.shape, name
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize('x_shape, kernel_shape, pads', [
    ((2, 8, 8, 3), (3, 3, 3, 4), ((1, 1), (1, 1))),  # three channels
    ((2, 8, 8, 1), (2, 2, 1, 4), ((1, 0), (1, 0))),  # an even kernel
    ((2, 9, 8, 1), (3, 3, 1, 4), ((1, 1), (1, 1))),  # an odd output
])
def test_one_channel_conv_max_pool_refuses_what_it_does_not_compute(
    x_shape, kernel_shape, pads):
  assert not convolution.applies_to_conv_max_pool(x_shape, kernel_shape, pads)
  with pytest.raises(ValueError, match='not one channel, an odd kernel'):
    convolution.one_channel_conv_max_pool(_random(x_shape, 1),
                                          _random(kernel_shape, 2), pads)


def test_max_of_four_sends_the_gradient_to_the_first_maximum():
  y = jnp.asarray([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0],
                   [0.0, 0.0, 0.0, 4.0]])
  np.testing.assert_array_equal(convolution.max_of_four(y), [3.0, 5.0, 4.0])
  grad = jax.grad(
      lambda y: jnp.sum(convolution.max_of_four(y) * jnp.arange(1.0, 4.0)))(y)
  np.testing.assert_array_equal(grad, [[0, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 3]])


@pytest.mark.parametrize('x_shape, padding, block_path', [
    ((4, 28, 28, 1), 'SAME', True),
    ((4, 28, 28, 1), 'VALID', True),   # 26x26 convolution
    ((4, 13, 13, 1), 'VALID', False),  # 11x11: lax's convolution
    ((4, 13, 13, 1), 'SAME', False),   # 13x13, odd: lax's, ceil pool
    ((4, 14, 14, 3), 'SAME', False),   # three channels: lax's
])
def test_conv_max_pool_has_nn_conv_parameters_values_and_gradients(
    x_shape, padding, block_path):
  images = _random(x_shape, 5)
  fast = models.ConvMaxPool(8, (3, 3), padding, name='Conv_0')
  flax_conv = nn.Conv(8, (3, 3), padding=padding, use_bias=False, name='Conv_0')
  reference = lambda v, x: models.MAX_POOLS[padding](flax_conv.apply(v, x))
  variables = fast.init(jax.random.PRNGKey(0), images)
  flax_variables = flax_conv.init(jax.random.PRNGKey(0), images)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(flax_variables)):
    np.testing.assert_array_equal(a, b)  # the same initializer and draws
  np.testing.assert_allclose(fast.apply(variables, images),
                             reference(variables, images), rtol=1e-5, atol=1e-5)
  loss = lambda f: jax.grad(lambda v: jnp.sum(jnp.tanh(f(v, images))))(variables)
  np.testing.assert_allclose(loss(fast.apply)['params']['kernel'],
                             loss(reference)['params']['kernel'],
                             rtol=1e-4, atol=1e-4)
  primitives = _primitives(fast.apply, variables, images)
  assert ('conv_general_dilated' not in primitives) == block_path, primitives
