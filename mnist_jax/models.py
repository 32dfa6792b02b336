"""Flax linen classifiers, chosen by name (`config.model`).

Every model maps float images [B, 28, 28, 1] in [0, 1] to logits [B, 10];
with `return_features=True` it returns `(logits, features)`, the features
being the penultimate activations the outlier analysis can use. Models know
nothing of data, optimizers or files.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from mnist_jax import convolution
from mnist_jax.data import IMAGE_SHAPE, NUM_CLASSES


def relu(x: jnp.ndarray) -> jnp.ndarray:
  """`nn.relu` as a select: the same values (NaN stays NaN) and gradient (0
  at 0).

  On XLA:CPU (jaxlib 0.10), YNNPACK fuses `max(x, 0)` into the reduction
  that reads it (an average pool) and materialises the zero operand as a
  full-size array every step: over a tenth of the Flax-example CNN's step. A
  select stays in XLA's own fusions (docs/performance.md).
  """
  return jnp.where(x <= 0, jnp.zeros((), x.dtype), x)


def _windows_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """[B, H, W, C] (even H and W) -> [B, H/2, 2, W/2, 2, C]: each 2x2 window
  on axes 2 and 4."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c)


def avg_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 average pooling with stride 2 (NHWC, even H and W) as a reshape and
  a mean: `nn.avg_pool(x, (2, 2), (2, 2))` without XLA:CPU's slow
  reduce_window."""
  return jnp.mean(_windows_2x2(x), axis=(2, 4))


@jax.custom_vjp
def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max pooling with stride 2 (NHWC, even H and W).

  The same values and gradient as `nn.max_pool(x, (2, 2), (2, 2))`, ties
  included: each window's gradient goes to its first maximum in row-major
  order. On XLA:CPU, reduce_window and its select_and_scatter gradient cost
  most of a small CNN's step, so the forward pass is a reshape and a max and
  the gradient one elementwise select. (`jnp.max`'s own gradient splits it
  among tied maxima; counting them is a reduction that XLA:CPU fuses with the
  next layer's gradient into a slow YNNPACK fusion, docs/performance.md.)
  """
  return jnp.max(_windows_2x2(x), axis=(2, 4))


def _max_pool_2x2_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_2x2_bwd(residuals, g):
  x, y = residuals
  windows = _windows_2x2(x)
  # The position (0-3, row-major) of the first maximum of each window.
  first = jnp.where(windows[:, :, 0, :, 0] == y, 0,
                    jnp.where(windows[:, :, 0, :, 1] == y, 1,
                              jnp.where(windows[:, :, 1, :, 0] == y, 2, 3)))
  # Each window position's number, shaped to broadcast on axes 2 to 5.
  position = (2 * jnp.arange(2).reshape(2, 1, 1, 1) +
              jnp.arange(2).reshape(1, 1, 2, 1))
  take = position == first[:, :, None, :, None, :]
  grad = jnp.where(take, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
  return (grad.reshape(x.shape),)


max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


def _pad_to_even(x: jnp.ndarray, value: float = 0.0) -> jnp.ndarray:
  """Adds a row and a column of `value` to odd H and W (NHWC)."""
  _, h, w, _ = x.shape
  return jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)),
                 constant_values=value)


def max_pool_2x2_ceil(x: jnp.ndarray) -> jnp.ndarray:
  """2x2/2 max pool that keeps the last row and column of odd sizes (7 -> 4)."""
  return max_pool_2x2(_pad_to_even(x, -jnp.inf))


def max_pool_2x2_floor(x: jnp.ndarray) -> jnp.ndarray:
  """2x2/2 max pool that drops the last row and column of odd sizes (7 -> 3),
  as `nn.max_pool` and PyTorch's MaxPool2d do."""
  _, h, w, _ = x.shape
  return max_pool_2x2(x[:, :h - h % 2, :w - w % 2])


# The 2x2 max pool for each padding: 'SAME' pads odd sizes, 'VALID' crops.
MAX_POOLS = {'SAME': max_pool_2x2_ceil, 'VALID': max_pool_2x2_floor}


def space_to_depth(x: jnp.ndarray) -> jnp.ndarray:
  """[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 4C]: each 2x2 patch becomes the
  channels of one pixel, in `tf.nn.space_to_depth`'s order (row, column,
  channel). An odd last row or column is padded with zeros first.

  Halves the resolution like a 2x2 pool but keeps every activation.
  """
  x = _pad_to_even(x)
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


# nn.Conv whose one-channel convolutions (the first layer) run as
# `convolution.one_channel_conv`: the same parameters, values and gradients.
Conv = functools.partial(nn.Conv,
                         conv_general_dilated_cls=convolution.ConvGeneralDilated)


class ConvMaxPool(nn.Module):
  """`nn.Conv(features, kernel_size, padding=padding, use_bias=False)`, then
  `MAX_POOLS[padding]`: the same parameter ('kernel', drawn alike under the
  same module name), values and gradients.

  One-channel images whose convolution has even sizes (and an odd kernel)
  go through `convolution.one_channel_conv_max_pool` (one matmul, several
  times faster on a CPU than lax's convolution of one channel); other
  inputs through lax's convolution.
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features))
    pads = tuple(lax.padtype_to_pads(x.shape[1:3], self.kernel_size, (1, 1),
                                     self.padding))
    if convolution.applies_to_conv_max_pool(x.shape, kernel.shape, pads):
      return convolution.one_channel_conv_max_pool(x, kernel, pads)
    return MAX_POOLS[self.padding](lax.conv_general_dilated(
        x, kernel, (1, 1), pads, dimension_numbers=convolution.NHWC))


DOWNSAMPLINGS = ('max_pool', 'pool_before_norm', 'space_to_depth')
PADDINGS = ('SAME', 'VALID')


def _require_kwarg(condition: bool, name: str, message: str) -> None:
  if not condition:
    raise ValueError(f'config.model_kwargs.{name}: {message}')


def _is_positive_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value > 0


class MLP(nn.Module):
  """784-128-10 perceptron."""
  hidden: int = 128

  def __post_init__(self):
    _require_kwarg(_is_positive_int(self.hidden), 'hidden',
                   f'must be a positive integer, got {self.hidden!r}')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    del train
    features = relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    logits = nn.Dense(NUM_CLASSES)(features)
    return (logits, features) if return_features else logits


class CNN(nn.Module):
  """The Flax MNIST example's network: conv32-pool-conv64-pool-dense256-dense10
  (its first convolution computed as `models.Conv`, the same parameters)."""

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    del train
    x = avg_pool_2x2(relu(Conv(32, (3, 3))(x)))
    x = avg_pool_2x2(relu(Conv(64, (3, 3))(x)))
    features = relu(nn.Dense(256)(x.reshape(x.shape[0], -1)))
    logits = nn.Dense(NUM_CLASSES)(features)
    return (logits, features) if return_features else logits


class ConvNet(nn.Module):
  """A VGG-style CNN with batch norm: the accurate model.

  Stage i is `convs_per_stage` 3x3 conv-BN-ReLU layers of `widths[i]`
  channels (one count for every stage, or one count per stage); then a dense
  layer of `dense` units with dropout, and the classifier.

  `downsample` says how the stages halve the resolution:
  - 'max_pool': a 2x2 max pool after each stage (28 -> 14 -> 7 -> 4).
  - 'pool_before_norm': the same pools, each between its stage's last
    convolution and that convolution's BN and ReLU (conv-pool-BN-ReLU, the
    order of the PyTorch recipe in benchmarks/peers/). A different model
    (BN statistics of the pooled activations), as accurate in one epoch, and
    the full-resolution BN and ReLU are gone: `configs/fast.py`'s step is
    about a sixth faster on a CPU (docs/performance.md).
  - 'space_to_depth': a `space_to_depth` before each stage (28 -> 14 -> 7)
    and one max pool after the last. Nothing is dropped, and a stage's
    convolutions read four times the previous stage's channels: on XLA:CPU a
    convolution with 128 input channels runs at 1.7x the FLOP rate of one
    with 32 (docs/performance.md).

  `padding` is every convolution's and pool's: 'SAME', or 'VALID', where
  each 3x3 convolution drops a pixel at each border and each max pool an
  odd last row and column, as in the PyTorch recipe (`MAX_POOLS`).

  The first convolution runs as shifted copies of the image (`models.Conv`)
  or, when a max pool follows it directly, as one matmul with that pool
  (`ConvMaxPool`); the parameters are nn.Conv's either way.
  """
  widths: Sequence[int] = (32, 64)
  convs_per_stage: int | Sequence[int] = 2
  dense: int = 256
  dropout: float = 0.25
  downsample: str = 'max_pool'
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    space_to_depth_stages = self.downsample == 'space_to_depth'
    convs = 0
    for width, num_convs in zip(self.widths, self.stage_conv_counts):
      if space_to_depth_stages:
        x = space_to_depth(x)
      for i in range(num_convs):
        # Named as nn.Conv would be, whichever module computes it.
        name = f'Conv_{convs}'
        convs += 1
        if self.downsample == 'pool_before_norm' and i == num_convs - 1:
          x = ConvMaxPool(width, (3, 3), self.padding, name=name)(x)
        else:
          x = Conv(width, (3, 3), padding=self.padding, use_bias=False,
                   name=name)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = relu(x)
      if self.downsample == 'max_pool':
        x = MAX_POOLS[self.padding](x)
    if space_to_depth_stages:
      x = MAX_POOLS[self.padding](x)
    x = x.reshape(x.shape[0], -1)
    features = relu(nn.Dense(self.dense)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(NUM_CLASSES)(x)
    return (logits, features) if return_features else logits

  def __post_init__(self):
    # Checked at construction, so a bad config fails before any file is made.
    widths = tuple(self.widths) if isinstance(self.widths, Sequence) else ()
    _require_kwarg(widths and all(map(_is_positive_int, widths)), 'widths',
                   f'must be positive integers, one per stage, got {self.widths!r}')
    _require_kwarg(all(map(_is_positive_int, self.stage_conv_counts)),
                   'convs_per_stage', 'must be positive integers, got '
                   f'{self.convs_per_stage!r}')
    _require_kwarg(_is_positive_int(self.dense), 'dense',
                   f'must be a positive integer, got {self.dense!r}')
    _require_kwarg(0 <= self.dropout < 1, 'dropout',
                   f'must be in [0, 1), got {self.dropout!r}')
    _require_kwarg(self.downsample in DOWNSAMPLINGS, 'downsample',
                   f'unknown {self.downsample!r}; choose one of '
                   f'{", ".join(DOWNSAMPLINGS)}')
    _require_kwarg(self.padding in PADDINGS, 'padding',
                   f'unknown {self.padding!r}; choose one of '
                   f'{", ".join(PADDINGS)}')
    if self.padding == 'VALID':
      self._valid_padding_leaves_pixels()
    super().__post_init__()

  def _valid_padding_leaves_pixels(self) -> None:
    """Unpadded stages shrink the 28x28 images (by 2 per 3x3 convolution,
    by half, rounded down, per pool): a clear error, before any data is
    read, when too few pixels are left for a convolution or the dense layer."""
    size, convs = IMAGE_SHAPE[0], 0
    pooled = self.downsample in ('max_pool', 'pool_before_norm')
    for num_convs in self.stage_conv_counts:
      if self.downsample == 'space_to_depth':
        size = -(-size // 2)
      for _ in range(num_convs):
        _require_kwarg(size >= 3, 'padding', f"'VALID' leaves {size}x{size} "
                       f"pixels for convolution {convs}; choose 'SAME' or "
                       'fewer stages')
        size, convs = size - 2, convs + 1
      size = size // 2 if pooled else size
    size = size // 2 if self.downsample == 'space_to_depth' else size
    _require_kwarg(size >= 1, 'padding', "'VALID' leaves no pixels for the "
                   "dense layer; choose 'SAME' or fewer stages")

  @property
  def stage_conv_counts(self) -> tuple[int, ...]:
    """`convs_per_stage` as one count per stage."""
    counts = self.convs_per_stage
    if isinstance(counts, int):
      return (counts,) * len(self.widths)
    _require_kwarg(
        len(counts) == len(self.widths), 'convs_per_stage',
        f'{tuple(counts)} has {len(counts)} entries for {len(self.widths)} '
        'widths; give one count per stage, or one integer for all')
    return tuple(counts)


MODELS = {'mlp': MLP, 'cnn': CNN, 'convnet': ConvNet}


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model named by `config.model`, built with `config.model_kwargs`."""
  if config.model not in MODELS:
    raise ValueError(f'config.model: unknown model {config.model!r}; '
                    f'choose one of {", ".join(sorted(MODELS))}')
  kwargs = dict(config.get('model_kwargs') or {})
  try:
    return MODELS[config.model](**kwargs)
  except TypeError as e:
    raise ValueError(
        f'config.model_kwargs: {e} (model_kwargs belong to the config\'s '
        f'model; for {config.model!r} start from configs/{config.model}.py '
        'if there is one)') from None
