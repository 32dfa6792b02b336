"""The affine and elastic augmentation: exact on the cases with known answers."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from mnist_jax import augment
from mnist_jax import steps

from conftest import tiny_config

def _digit_like_image():
  image = np.zeros((28, 28, 1), np.float32)
  image[5:20, 9:12] = 1.0  # an asymmetric 'L'
  image[17:20, 9:22] = 0.5
  return jnp.asarray(image)


def test_identity_transform_is_exact():
  image = _digit_like_image()
  out = augment.warp_image(image, jnp.float32(0), jnp.float32(1), jnp.zeros(2))
  np.testing.assert_allclose(out, image, atol=1e-6)


def test_quarter_turn_equals_rot90():
  image = _digit_like_image()
  out = augment.warp_image(image, jnp.float32(math.pi / 2), jnp.float32(1),
                             jnp.zeros(2))
  np.testing.assert_allclose(out, np.rot90(image, k=1), atol=1e-5)


def test_whole_pixel_shift_moves_content():
  image = _digit_like_image()
  out = augment.warp_image(image, jnp.float32(0), jnp.float32(1),
                             jnp.array([2.0, -1.0]))
  expected = np.zeros_like(image)
  expected[2:, :-1] = np.asarray(image)[:-2, 1:]
  np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.slow  # compiles the random draws op by op
def test_random_affine_draws_different_transforms_within_bounds():
  images = jnp.repeat(_digit_like_image()[None], 16, axis=0)
  out = augment.random_warp(images, jax.random.PRNGKey(0), augment.Augmentation(
      max_shift=1, max_rotation=10, max_scale=0.1))
  assert out.shape == images.shape
  assert len({np.asarray(o).tobytes() for o in out}) == 16
  mass = np.asarray(out).sum(axis=(1, 2, 3)) / float(images[0].sum())
  assert np.all((mass > 0.75) & (mass < 1.3))  # area scales by s^2, s in [0.9, 1.1]


def test_augment_without_settings_is_identity():
  images = jnp.repeat(_digit_like_image()[None], 2, axis=0)
  assert augment.augment(images, jax.random.PRNGKey(0)) is images


@pytest.mark.parametrize('size, sigma', [(28, 4.0), (28, 1.5), (10, 6.0)])
def test_gaussian_filter_matrix_is_scipys_gaussian_filter(size, sigma):
  signal = np.random.default_rng(0).uniform(-1, 1, size)
  expected = scipy.ndimage.gaussian_filter1d(signal, sigma, mode='constant')
  matrix = augment.gaussian_filter_matrix(size, sigma)
  np.testing.assert_allclose(matrix @ signal, expected, atol=1e-6)


def test_constant_displacement_is_a_shift():
  """Sampling at p + d moves the content by -d."""
  image = _digit_like_image()
  displacement = jnp.stack([jnp.full((28, 28), -2.0), jnp.full((28, 28), 1.0)])
  out = augment.warp_image(image, jnp.float32(0), jnp.float32(1), jnp.zeros(2),
                           displacement)
  shifted = augment.warp_image(image, jnp.float32(0), jnp.float32(1),
                               jnp.array([2.0, -1.0]))
  np.testing.assert_allclose(out, shifted, atol=1e-6)


@pytest.mark.slow  # compiles the random draws op by op
def test_elastic_displacement_is_smooth_and_scales_with_alpha():
  rng = jax.random.PRNGKey(0)
  field = np.asarray(augment.random_elastic_displacement(rng, 64, 28, 28, 1.0, 4.0))
  double = augment.random_elastic_displacement(rng, 64, 28, 28, 2.0, 4.0)
  np.testing.assert_allclose(double, 2 * field, rtol=1e-5)
  assert field.shape == (64, 2, 28, 28)
  assert len({f.tobytes() for f in field}) == 64
  neighbour_step = np.abs(np.diff(field, axis=-1)).mean()
  assert neighbour_step < 0.25 * np.abs(field).mean()  # noise alone: about 1x
  rough = augment.random_elastic_displacement(rng, 64, 28, 28, 1.0, 0.5)
  assert np.abs(np.diff(np.asarray(rough), axis=-1)).mean() > 0.5 * np.abs(rough).mean()


@pytest.mark.slow  # compiles the random draws op by op
def test_random_warp_with_elastic_distortion_keeps_the_digit():
  images = jnp.repeat(_digit_like_image()[None], 16, axis=0)
  rng = jax.random.PRNGKey(0)
  affine = augment.Augmentation(max_shift=1, max_rotation=10, max_scale=0.1)
  plain = augment.random_warp(images, rng, affine)
  elastic = augment.random_warp(
      images, rng, dataclasses.replace(affine, elastic_alpha=16.0))
  assert not np.allclose(plain, elastic)
  assert len({np.asarray(o).tobytes() for o in elastic}) == 16
  mass = np.asarray(elastic).sum(axis=(1, 2, 3)) / float(images[0].sum())
  assert np.all((mass > 0.7) & (mass < 1.4))
  elastic_only = augment.Augmentation(elastic_alpha=16.0)
  np.testing.assert_allclose(augment.augment(images, rng, elastic_only),
                             augment.random_warp(images, rng, elastic_only))


def test_elastic_key_leaves_the_affine_draws_unchanged():
  """random_warp splits its key in four where it once split it in three; the
  committed results of the affine configs reproduce only if the first three
  keys are the same."""
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(
      jax.random.key_data(jax.random.split(key, 4)[:3]),
      jax.random.key_data(jax.random.split(key, 3)))


def test_random_shift_moves_content_within_bounds():
  image = jnp.zeros((1, 28, 28, 1)).at[0, 10, 10, 0].set(1.0)
  images = jnp.repeat(image, 64, axis=0)
  shifted = augment.random_shift(images, jax.random.PRNGKey(0), max_shift=2)
  rows, cols = np.nonzero(np.asarray(shifted[..., 0]).sum(0))
  assert shifted.shape == images.shape
  assert rows.min() >= 8 and rows.max() <= 12
  assert cols.min() >= 8 and cols.max() <= 12
  assert len(set(zip(rows, cols))) > 10  # many different shifts were drawn
  np.testing.assert_allclose(np.asarray(shifted).sum(axis=(1, 2, 3)), 1.0)


def test_augmentation_from_config_reads_every_setting():
  config = tiny_config('', max_shift=1, max_rotation=5.0, max_scale=0.1,
                       elastic_alpha=8.0, elastic_sigma=3.0)
  assert augment.Augmentation.from_config(config) == augment.Augmentation(
      max_shift=1, max_rotation=5.0, max_scale=0.1, elastic_alpha=8.0,
      elastic_sigma=3.0)


def test_elastic_distortion_reaches_the_train_step(mlp_state):
  """The train step's program (lowered, not compiled) changes with the
  distortion's settings, and only with them."""
  images = jnp.repeat(_digit_like_image()[None], 8, axis=0)
  batch = {'image': images, 'label': jnp.arange(8) % 10}
  step = jax.jit(steps.train_step, static_argnames='augmentation')
  program = lambda **settings: step.lower(
      mlp_state, batch, augmentation=augment.Augmentation(**settings)).as_text()
  rotation = program(max_rotation=5.0)
  assert rotation == program(max_rotation=5.0)
  elastic = program(max_rotation=5.0, elastic_alpha=8.0)
  assert elastic != rotation
  assert elastic != program(max_rotation=5.0, elastic_alpha=16.0)
