"""The affine augmentation: exact on the cases with known answers."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import augment


def _digit_like_image():
  image = np.zeros((28, 28, 1), np.float32)
  image[5:20, 9:12] = 1.0  # an asymmetric 'L'
  image[17:20, 9:22] = 0.5
  return jnp.asarray(image)


def test_identity_transform_is_exact():
  image = _digit_like_image()
  out = augment._affine_one(image, jnp.float32(0), jnp.float32(1), jnp.zeros(2))
  np.testing.assert_allclose(out, image, atol=1e-6)


def test_quarter_turn_equals_rot90():
  image = _digit_like_image()
  out = augment._affine_one(image, jnp.float32(math.pi / 2), jnp.float32(1),
                            jnp.zeros(2))
  np.testing.assert_allclose(out, np.rot90(image, k=1), atol=1e-5)


def test_whole_pixel_shift_moves_content():
  image = _digit_like_image()
  out = augment._affine_one(image, jnp.float32(0), jnp.float32(1),
                            jnp.array([2.0, -1.0]))
  expected = np.zeros_like(image)
  expected[2:, :-1] = np.asarray(image)[:-2, 1:]
  np.testing.assert_allclose(out, expected, atol=1e-6)


def test_random_affine_draws_different_transforms_within_bounds():
  images = jnp.repeat(_digit_like_image()[None], 16, axis=0)
  out = augment.random_affine(images, jax.random.PRNGKey(0), max_shift=1,
                              max_rotation=10, max_scale=0.1)
  assert out.shape == images.shape
  assert len({np.asarray(o).tobytes() for o in out}) == 16
  mass = np.asarray(out).sum(axis=(1, 2, 3)) / float(images[0].sum())
  assert np.all((mass > 0.75) & (mass < 1.3))  # area scales by s^2, s in [0.9, 1.1]


def test_augment_without_settings_is_identity():
  images = jnp.repeat(_digit_like_image()[None], 2, axis=0)
  assert augment.augment(images, jax.random.PRNGKey(0)) is images
