"""Random training-image transforms, drawn per image inside the jitted step."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def random_shift(images: jax.Array, rng: jax.Array, max_shift: int) -> jax.Array:
  """Translates each image by up to `max_shift` whole pixels, filling with zeros."""
  batch, height, width, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)))
  offsets = jax.random.randint(rng, (batch, 2), 0, 2 * max_shift + 1)
  crop = lambda image, offset: jax.lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def warp_image(image: jax.Array, angle: jax.Array, scale: jax.Array,
               shift: jax.Array,
               displacement: jax.Array | None = None) -> jax.Array:
  """Rotates by `angle` (radians) and scales about the centre, then shifts.

  Output pixel p samples the input at A^-1 (p - c - shift) + c + d(p),
  bilinearly, zero outside the image; d is the optional per-pixel
  `displacement` [2, H, W] (rows, columns) of an elastic distortion.
  """
  height, width, channels = image.shape
  centre = jnp.array([(height - 1) / 2, (width - 1) / 2])
  rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing='ij')
  offset = jnp.stack([rows, cols]).reshape(2, -1) - (centre + shift)[:, None]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  inverse = jnp.array([[cos, sin], [-sin, cos]]) / scale
  source = inverse @ offset + centre[:, None]
  if displacement is not None:
    source = source + displacement.reshape(2, -1)
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel, list(source), order=1, mode='constant', cval=0.0)
  channels_out = [sample(image[..., c]).reshape(height, width)
                  for c in range(channels)]
  return jnp.stack(channels_out, axis=-1)


def gaussian_filter_matrix(size: int, sigma: float) -> np.ndarray:
  """[size, size] matrix G such that G @ x filters x with a Gaussian of std
  `sigma`, zero beyond the ends: scipy.ndimage.gaussian_filter1d with
  mode='constant' and its default truncation at 4 sigma, as one matmul."""
  radius = int(4.0 * sigma + 0.5)
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps /= taps.sum()
  distance = np.arange(size)[:, None] - np.arange(size)[None, :]
  inside = np.abs(distance) <= radius
  return np.where(inside, taps[np.clip(distance + radius, 0, 2 * radius)],
                  0.0).astype(np.float32)


def random_elastic_displacement(rng: jax.Array, batch: int, height: int,
                                width: int, alpha: float,
                                sigma: float) -> jax.Array:
  """Per image, a smooth random displacement field [B, 2, H, W] in pixels
  (Simard et al. 2003): uniform noise in [-1, 1] per pixel and axis, filtered
  with a Gaussian of std `sigma`, times `alpha`."""
  noise = jax.random.uniform(rng, (batch, 2, height, width), minval=-1.0,
                             maxval=1.0)
  rows = gaussian_filter_matrix(height, sigma)
  cols = gaussian_filter_matrix(width, sigma)
  return alpha * jnp.einsum('ij,bajk,lk->bail', rows, noise, cols)


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """A config's augmentation settings, all off by default; hashable, so the
  jitted train step can take them as a static argument."""
  max_shift: int = 0  # pixels
  max_rotation: float = 0.0  # degrees
  max_scale: float = 0.0  # scaling in [1 - s, 1 + s]
  elastic_alpha: float = 0.0  # pixels
  elastic_sigma: float = 4.0  # pixels

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'Augmentation':
    return cls(**{field.name: config[field.name]
                  for field in dataclasses.fields(cls)})


def random_warp(images: jax.Array, rng: jax.Array,
                settings: Augmentation) -> jax.Array:
  """Per image: rotation up to +-`max_rotation` degrees, scale in
  [1 - max_scale, 1 + max_scale], shift up to +-`max_shift` pixels and, when
  `elastic_alpha` > 0, an elastic distortion, all in one bilinear resampling."""
  batch, height, width, _ = images.shape
  # The first three of split(rng, 4) are split(rng, 3) (threefry is
  # partitionable), so configs without the distortion keep their draws.
  angle_rng, scale_rng, shift_rng, elastic_rng = jax.random.split(rng, 4)
  angles = jnp.deg2rad(settings.max_rotation) * jax.random.uniform(
      angle_rng, (batch,), minval=-1.0, maxval=1.0)
  scales = 1.0 + settings.max_scale * jax.random.uniform(
      scale_rng, (batch,), minval=-1.0, maxval=1.0)
  shifts = settings.max_shift * jax.random.uniform(
      shift_rng, (batch, 2), minval=-1.0, maxval=1.0)
  displacements = None
  if settings.elastic_alpha:
    displacements = random_elastic_displacement(
        elastic_rng, batch, height, width, settings.elastic_alpha,
        settings.elastic_sigma)
  return jax.vmap(warp_image)(images, angles, scales, shifts, displacements)


def augment(images: jax.Array, rng: jax.Array,
            settings: Augmentation = Augmentation()) -> jax.Array:
  """The config's augmentation of float images [B, H, W, C].

  Whole-pixel shifts alone are an exact crop; rotation, scaling or an elastic
  distortion switch to a bilinear warp that also draws the shift
  (continuously).
  """
  if settings.max_rotation or settings.max_scale or settings.elastic_alpha:
    return random_warp(images, rng, settings)
  if settings.max_shift:
    return random_shift(images, rng, settings.max_shift)
  return images
