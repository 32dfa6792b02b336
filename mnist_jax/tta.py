"""Test-time augmentation: a model's prediction averaged over fixed views.

With `config.tta` on, evaluation classifies each test image as it is and in
eight transformed copies: shifted by one pixel up, down, left and right,
rotated by -6 and +6 degrees, and scaled by 0.93 and 1.07, each inside
`configs/best.py`'s training augmentation. The result is the mean of the
nine log-probabilities (a geometric mean of the probabilities). The views
were fixed before they were measured, not tuned on the test set (README,
Performance). It is still one model: one set of weights, nine forward passes.
"""

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from mnist_jax import augment


class View(NamedTuple):
  """One deterministic transform of every image, fixed when a step is traced."""
  rotation: float = 0.0  # degrees
  scale: float = 1.0
  shift: tuple[float, float] = (0.0, 0.0)  # pixels: rows, columns


IDENTITY = (View(),)
VIEWS = (View(),
         View(shift=(1.0, 0.0)), View(shift=(-1.0, 0.0)),
         View(shift=(0.0, 1.0)), View(shift=(0.0, -1.0)),
         View(rotation=-6.0), View(rotation=6.0),
         View(scale=0.93), View(scale=1.07))


def config_views(config: ml_collections.ConfigDict) -> tuple[View, ...]:
  """The views a config evaluates with: VIEWS with `config.tta`, else IDENTITY."""
  return VIEWS if config.tta else IDENTITY


def apply_view(images: jax.Array, view: View) -> jax.Array:
  """Float images [B, H, W, C] transformed by `view` (bilinear, zero fill)."""
  if view == View():
    return images
  warp = jax.vmap(augment.warp_image, in_axes=(0, None, None, None))
  return warp(images, jnp.deg2rad(jnp.float32(view.rotation)),
              jnp.float32(view.scale), jnp.asarray(view.shift, jnp.float32))


def average(view_logits: Sequence[jax.Array]) -> jax.Array:
  """One view's logits as they are; for several, the mean over views of the
  log-softmax, which softmax and cross-entropy take as logits."""
  if len(view_logits) == 1:
    return view_logits[0]
  return jnp.mean(jnp.stack([jax.nn.log_softmax(l) for l in view_logits]),
                  axis=0)


def averaged_logits(logits_fn: Callable[[jax.Array], jax.Array],
                    images: jax.Array, views: tuple[View, ...]) -> jax.Array:
  """`average` of `logits_fn` over `views` of `images`."""
  return average([logits_fn(apply_view(images, v)) for v in views])
