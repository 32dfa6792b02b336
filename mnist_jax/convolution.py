"""A convolution of one-channel images that XLA:CPU runs fast.

`ConvGeneralDilated` stands in for `lax.conv_general_dilated` inside
`nn.Conv` (its `conv_general_dilated_cls` field): a first layer on MNIST's
one-channel images goes through `one_channel_conv`, every other convolution
through lax's. Parameters, values and gradients are those of `nn.Conv`.
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

Pads = tuple[tuple[int, int], ...]
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _taps(x: jnp.ndarray, window: Sequence[int], pads: Pads) -> list[jnp.ndarray]:
  """[B, H, W, 1] -> for each kernel position (row-major), the [B, H', W']
  pixels it multiplies in a stride-1 convolution padded by `pads`."""
  padded = jnp.pad(x[..., 0], ((0, 0), *pads))
  out_h = padded.shape[1] - window[0] + 1
  out_w = padded.shape[2] - window[1] + 1
  return [padded[:, i:i + out_h, j:j + out_w]
          for i in range(window[0]) for j in range(window[1])]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def one_channel_conv(x: jnp.ndarray, kernel: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  """A stride-1 convolution of one-channel images x [B, H, W, 1] with kernel
  [KH, KW, 1, C], each spatial axis padded by `pads` ((low, high) pairs):
  `lax.conv_general_dilated`'s values and gradients, to float rounding.

  With one input channel a convolution is a sum of KH*KW shifted copies of
  the image, each times a row of the kernel, which XLA:CPU fuses into one
  elementwise loop; its own convolution of a single channel runs at a few
  GFLOP/s. The kernel's gradient is one matmul of the shifted copies with
  the output's gradient, not a convolution with the batch as its feature
  axis. The Flax example's CNN steps about a third faster on a CPU
  (docs/performance.md).
  """
  taps = _taps(x, kernel.shape[:2], pads)
  rows = kernel.reshape(len(taps), kernel.shape[-1])
  out = taps[0][..., None] * rows[0]
  for tap, row in zip(taps[1:], rows[1:]):
    out = out + tap[..., None] * row
  return out


def _one_channel_conv_fwd(x, kernel, pads):
  return one_channel_conv(x, kernel, pads), (x, kernel)


def _one_channel_conv_bwd(pads, residuals, g):
  x, kernel = residuals
  taps = jnp.stack(_taps(x, kernel.shape[:2], pads), axis=-1)
  kernel_grad = jnp.dot(taps.reshape(-1, taps.shape[-1]).T,
                        g.reshape(-1, g.shape[-1]))
  # The image's gradient is lax's; XLA drops it when nothing uses it, as in
  # training, where only the parameters are differentiated.
  _, conv_vjp = jax.vjp(
      lambda x: lax.conv_general_dilated(x, kernel, (1, 1), pads,
                                         dimension_numbers=_NHWC), x)
  return conv_vjp(g)[0], kernel_grad.reshape(kernel.shape)


one_channel_conv.defvjp(_one_channel_conv_fwd, _one_channel_conv_bwd)


class ConvGeneralDilated:
  """`lax.conv_general_dilated`, with `one_channel_conv` where it applies:
  one input channel, NHWC images and HWIO kernels, one feature group, stride
  and dilations 1. For `nn.Conv(..., conv_general_dilated_cls=ConvGeneralDilated)`.
  """

  def __call__(self, lhs: jnp.ndarray, rhs: jnp.ndarray,
               window_strides: Sequence[int], padding: str | Sequence[tuple[int, int]],
               lhs_dilation: Sequence[int] | None = None,
               rhs_dilation: Sequence[int] | None = None,
               dimension_numbers: Any = None, feature_group_count: int = 1,
               **kwargs) -> jnp.ndarray:
    ones = (1,) * (lhs.ndim - 2)
    applies = (
        lhs.ndim == 4 and lhs.shape[-1] == 1 and feature_group_count == 1
        and kwargs.get('batch_group_count', 1) == 1
        and all(tuple(v or ones) == ones
                for v in (window_strides, lhs_dilation, rhs_dilation))
        and (lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)))
    if not applies:
      return lax.conv_general_dilated(
          lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
          rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
          feature_group_count=feature_group_count, **kwargs)
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], ones, padding)
    return one_channel_conv(lhs, rhs, tuple(tuple(p) for p in padding))
