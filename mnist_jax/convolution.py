"""Convolutions of one-channel images that XLA:CPU runs fast.

XLA:CPU's own convolution of a single input channel runs at a few GFLOP/s,
and its kernel gradient is a convolution with the batch as its feature axis.
Two formulations of MNIST's first layer avoid both:

- `one_channel_conv`: the sum of the image's shifted copies. For
  `nn.Conv(..., conv_general_dilated_cls=ConvGeneralDilated)`, which sends
  every other convolution to lax's.
- `one_channel_conv_max_pool`: the convolution and the 2x2 max pool after it,
  as one matmul, for a convolution that a max pool follows.

Values and gradients are lax's (and `models.max_pool_2x2`'s), to float
rounding.
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

Pads = tuple[tuple[int, int], ...]
NHWC = ('NHWC', 'HWIO', 'NHWC')


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
                                         dimension_numbers=NHWC), x)
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
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)))
    if not applies:
      return lax.conv_general_dilated(
          lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
          rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
          feature_group_count=feature_group_count, **kwargs)
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], ones, padding)
    return one_channel_conv(lhs, rhs, tuple(tuple(p) for p in padding))


def _block_patches(x: jnp.ndarray, window: Sequence[int], pads: Pads) -> jnp.ndarray:
  """[B, H, W, 1] -> [B, H'/2, W'/2, (KH+1)(KW+1)]: for each 2x2 block of a
  stride-1 convolution's output (H' x W', padded by `pads`), the
  (KH+1) x (KW+1) input pixels its four outputs read, row-major.

  Window row 2d+u of block row i is padded row 2(i+d)+u: two slices and
  reshapes per axis, which XLA fuses into one loop, where one strided slice
  per window pixel would be that many small ones.
  """
  padded = jnp.pad(x[..., 0], ((0, 0), *pads))
  batch = padded.shape[0]
  blocks = [(padded.shape[1] - window[0] + 1) // 2,
            (padded.shape[2] - window[1] + 1) // 2]
  shifts = [(window[0] + 1) // 2, (window[1] + 1) // 2]
  rows = jnp.stack([padded[:, 2 * d:2 * (d + blocks[0])]
                    for d in range(shifts[0])], axis=1)
  rows = rows.reshape(batch, shifts[0], blocks[0], 2, padded.shape[2])
  pixels = jnp.stack([rows[..., 2 * d:2 * (d + blocks[1])]
                      for d in range(shifts[1])], axis=4)
  pixels = pixels.reshape(batch, shifts[0], blocks[0], 2, shifts[1], blocks[1], 2)
  return pixels.transpose(0, 2, 5, 1, 3, 4, 6).reshape(
      batch, blocks[0], blocks[1], -1)


def _block_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
  """[KH, KW, 1, C] -> [(KH+1)(KW+1), 4C]: the kernel placed at each output
  position of a 2x2 block (row-major, the fastest-varying index), zeros
  elsewhere."""
  rows = kernel[:, :, 0, :]
  placed = [jnp.pad(rows, ((i, 1 - i), (j, 1 - j), (0, 0)))
            for i in range(2) for j in range(2)]
  return jnp.stack(placed, axis=-1).reshape(-1, 4 * kernel.shape[-1])


@jax.custom_vjp
def max_of_four(y: jnp.ndarray) -> jnp.ndarray:
  """[..., 4] -> [...], the maximum over the last axis, whose gradient goes
  to the first maximum (`models.max_pool_2x2`'s rule for ties).

  Three elementwise maxima, not a reduction, which XLA:CPU runs about 3%
  of `configs/fast.py`'s step slower over an axis of four.
  """
  return jnp.maximum(jnp.maximum(y[..., 0], y[..., 1]),
                     jnp.maximum(y[..., 2], y[..., 3]))


def _max_of_four_fwd(y):
  top = max_of_four(y)
  return top, (y, top)


def _max_of_four_bwd(residuals, g):
  y, top = residuals
  first = jnp.where(y[..., 0] == top, 0, jnp.where(
      y[..., 1] == top, 1, jnp.where(y[..., 2] == top, 2, 3)))
  take = jnp.arange(4) == first[..., None]
  return (jnp.where(take, g[..., None], jnp.zeros((), g.dtype)),)


max_of_four.defvjp(_max_of_four_fwd, _max_of_four_bwd)


def applies_to_conv_max_pool(x_shape: Sequence[int], kernel_shape: Sequence[int],
                             pads: Pads) -> bool:
  """Whether `one_channel_conv_max_pool` takes these NHWC images, HWIO
  kernel and pads: one channel, odd kernel sizes, even output sizes."""
  out_sizes = [size + low + high - window + 1 for size, (low, high), window
               in zip(x_shape[1:3], pads, kernel_shape[:2])]
  return (x_shape[-1] == 1 and all(k % 2 for k in kernel_shape[:2])
          and all(size > 0 and size % 2 == 0 for size in out_sizes))


def one_channel_conv_max_pool(x: jnp.ndarray, kernel: jnp.ndarray,
                              pads: Pads) -> jnp.ndarray:
  """A stride-1 convolution of one-channel images x [B, H, W, 1] with kernel
  [KH, KW, 1, C] (each spatial axis padded by `pads`), then a 2x2 max pool
  with stride 2. The kernel's sizes must be odd and the convolution's
  output sizes even (`applies_to_conv_max_pool`); ValueError otherwise.

  Each 2x2 block of the convolution's output is one matmul row: the
  (KH+1) x (KW+1) pixels the block reads, times the kernel placed at the
  block's four positions, and the pool is the maximum of those four. The
  kernel's gradient is a matmul too. `configs/fast.py`'s step (28x28, 16
  channels, batch 64) is about a fifth faster than with lax's convolution
  and a reshaped max (docs/performance.md); the sum of shifted copies
  (`one_channel_conv`) would be recomputed by XLA:CPU inside the pool's
  gradient.
  """
  if not applies_to_conv_max_pool(x.shape, kernel.shape, pads):
    raise ValueError(f'one_channel_conv_max_pool: images {x.shape}, kernel '
                     f'{kernel.shape} and pads {pads} are not one channel, an '
                     'odd kernel and an even output')
  patches = _block_patches(x, kernel.shape[:2], pads)
  batch, blocks_h, blocks_w, taps = patches.shape
  channels = kernel.shape[-1]
  y = jnp.dot(patches.reshape(-1, taps), _block_kernel(kernel))
  return max_of_four(y.reshape(batch, blocks_h, blocks_w, channels, 4))
