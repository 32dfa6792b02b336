"""Random training-image transforms, drawn per image inside the jitted step."""

import jax
import jax.numpy as jnp


def random_shift(images: jax.Array, rng: jax.Array, max_shift: int) -> jax.Array:
  """Translates each image by up to `max_shift` whole pixels, filling with zeros."""
  batch, height, width, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)))
  offsets = jax.random.randint(rng, (batch, 2), 0, 2 * max_shift + 1)
  crop = lambda image, offset: jax.lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def _affine_one(image: jax.Array, angle: jax.Array, scale: jax.Array,
                shift: jax.Array) -> jax.Array:
  """Rotates by `angle` (radians) and scales about the centre, then shifts.

  Output pixel p samples the input at A^-1 (p - c - shift) + c, bilinearly,
  zero outside the image.
  """
  height, width, channels = image.shape
  centre = jnp.array([(height - 1) / 2, (width - 1) / 2])
  rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing='ij')
  offset = jnp.stack([rows, cols]).reshape(2, -1) - (centre + shift)[:, None]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  inverse = jnp.array([[cos, sin], [-sin, cos]]) / scale
  source = inverse @ offset + centre[:, None]
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel, list(source), order=1, mode='constant', cval=0.0)
  channels_out = [sample(image[..., c]).reshape(height, width)
                  for c in range(channels)]
  return jnp.stack(channels_out, axis=-1)


def random_affine(images: jax.Array, rng: jax.Array, max_shift: float,
                  max_rotation: float, max_scale: float) -> jax.Array:
  """Per image: rotation up to +-`max_rotation` degrees, scale in
  [1 - max_scale, 1 + max_scale], shift up to +-`max_shift` pixels."""
  batch = images.shape[0]
  angle_rng, scale_rng, shift_rng = jax.random.split(rng, 3)
  angles = jnp.deg2rad(max_rotation) * jax.random.uniform(
      angle_rng, (batch,), minval=-1.0, maxval=1.0)
  scales = 1.0 + max_scale * jax.random.uniform(
      scale_rng, (batch,), minval=-1.0, maxval=1.0)
  shifts = max_shift * jax.random.uniform(
      shift_rng, (batch, 2), minval=-1.0, maxval=1.0)
  return jax.vmap(_affine_one)(images, angles, scales, shifts)


def augment(images: jax.Array, rng: jax.Array, max_shift: int = 0,
            max_rotation: float = 0.0, max_scale: float = 0.0) -> jax.Array:
  """The config's augmentation of float images [B, H, W, C].

  Whole-pixel shifts alone are an exact crop; rotation or scaling switch to a
  bilinear affine warp that also draws the shift (continuously).
  """
  if max_rotation or max_scale:
    return random_affine(images, rng, max_shift, max_rotation, max_scale)
  if max_shift:
    return random_shift(images, rng, max_shift)
  return images
