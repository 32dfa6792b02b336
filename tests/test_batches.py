"""How a split becomes device batches (batches.py): every training example
at most once per epoch, every test example exactly once."""

import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import batches
from mnist_jax import data as data_lib
from mnist_jax import parallel
from mnist_jax import steps
from mnist_jax import train

from conftest import synthetic_digits


def _split(num_examples: int, seed: int = 0) -> data_lib.Split:
  images, labels = synthetic_digits(num_examples, seed)
  return data_lib.Split(images=images[..., None], labels=labels.astype(np.int32),
                        index=np.arange(num_examples, dtype=np.int64))


def test_padded_rows():
  rows = batches.padded_rows(5, 4)
  np.testing.assert_array_equal(rows, [[0, 1, 2, 3], [4, 5, 5, 5]])


def test_epoch_rows_depend_on_seed_and_epoch_only():
  a = batches.epoch_rows(100, 32, seed=3, epoch=2)
  assert a.shape == (3, 32) and len(np.unique(a)) == 96
  np.testing.assert_array_equal(a, batches.epoch_rows(100, 32, seed=3, epoch=2))
  assert not np.array_equal(a, batches.epoch_rows(100, 32, seed=3, epoch=3))
  assert not np.array_equal(a, batches.epoch_rows(100, 32, seed=4, epoch=2))


def test_train_batches_hold_the_rows_given():
  split = _split(100)
  rows = batches.epoch_rows(100, 32, seed=0, epoch=1)
  mesh = parallel.create_mesh()
  device = batches.device_train_batches(
      split, rows, parallel.stacked_batches_sharding(mesh))
  assert batches.num_batches(device) == 3
  np.testing.assert_array_equal(device['image'], split.images[rows])
  np.testing.assert_array_equal(device['label'], split.labels[rows])


def test_train_batches_like_describes_the_train_batches():
  split = _split(100)
  sharding = parallel.stacked_batches_sharding(parallel.create_mesh())
  device = batches.device_train_batches(
      split, batches.epoch_rows(100, 32, seed=0, epoch=1), sharding)
  like = batches.train_batches_like(split, 32, sharding)
  assert like.keys() == device.keys()
  for key, spec in like.items():
    assert (spec.shape, spec.dtype, spec.sharding) == (
        device[key].shape, device[key].dtype, device[key].sharding), key


def test_eval_batches_are_padded_and_masked():
  split = _split(10)
  mesh = parallel.create_mesh()
  device = batches.device_eval_batches(split, 4,
                                       parallel.stacked_batches_sharding(mesh))
  assert device['image'].shape == (3, 4, 28, 28, 1)
  np.testing.assert_array_equal(device['mask'].reshape(-1),
                                [1] * 10 + [0] * 2)
  np.testing.assert_array_equal(device['label'].reshape(-1)[:10], split.labels)
  np.testing.assert_array_equal(device['image'].reshape(-1, 28, 28, 1)[:10],
                                split.images)
  assert not np.asarray(device['image'])[2, 2:].any()  # padding is blank


def test_evaluation_counts_every_example_once(mlp_state):
  """200 test examples in batches of 64: 4 batches, 56 padded rows masked."""
  split = _split(200, seed=1)
  mesh = parallel.create_mesh()
  device = batches.device_eval_batches(split, 64,
                                       parallel.stacked_batches_sharding(mesh))
  assert device['image'].shape[:2] == (4, 64)
  metrics = train.evaluate(train.make_eval_fn(mesh), mlp_state, device)
  assert metrics['count'] == 200
  logits = np.asarray(mlp_state.apply_fn(
      {'params': mlp_state.params}, steps.to_float(jnp.asarray(split.images))))
  assert metrics['accuracy'] == np.mean(logits.argmax(-1) == split.labels)
  losses = steps.cross_entropy(logits, jnp.asarray(split.labels))
  assert metrics['loss'] == pytest.approx(float(losses.mean()), rel=1e-5)
