"""How a split becomes device arrays of batches.

An epoch's training batches, and every test example once in padded, masked
batches, each stacked into one array [num_batches, batch, ...] that stays on
the devices for the whole epoch (sharded along the batch axis), so that a
step indexes its batch inside the compiled computation.
"""

import jax
import numpy as np

from mnist_jax import parallel
from mnist_jax.data import Split

Batch = dict[str, jax.Array]


def epoch_rows(num_examples: int, batch_size: int, seed: int,
               epoch: int) -> np.ndarray:
  """Example positions [steps, batch] of one epoch, a function of seed and epoch.

  The incomplete last batch is dropped (a different one each epoch); test
  data never goes through here.
  """
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  steps = num_examples // batch_size
  return order[:steps * batch_size].reshape(steps, batch_size)


def padded_rows(num_examples: int, batch_size: int) -> np.ndarray:
  """Positions 0..N-1 in batches, the last batch padded with position N."""
  num_batches = -(-num_examples // batch_size)
  rows = np.full(num_batches * batch_size, num_examples)
  rows[:num_examples] = np.arange(num_examples)
  return rows.reshape(num_batches, batch_size)


def device_train_batches(split: Split, rows: np.ndarray,
                         sharding: jax.sharding.Sharding) -> Batch:
  return {
      'image': parallel.stacked_batches(lambda r: split.images[r], rows, sharding),
      'label': parallel.stacked_batches(lambda r: split.labels[r], rows, sharding),
  }


def train_batches_like(split: Split, batch_size: int,
                       sharding: jax.sharding.Sharding
                       ) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes, dtypes and sharding of every epoch's `device_train_batches`."""
  steps = len(split) // batch_size

  def like(array: np.ndarray) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((steps, batch_size) + array.shape[1:],
                                array.dtype, sharding=sharding)

  return {'image': like(split.images), 'label': like(split.labels)}


def device_eval_batches(split: Split, batch_size: int,
                        sharding: jax.sharding.Sharding) -> Batch:
  """Every example once, padded to whole batches, with a 0/1 'mask'."""
  images = np.concatenate([split.images, np.zeros_like(split.images[:1])])
  labels = np.append(split.labels, 0).astype(np.int32)
  mask = np.append(np.ones(len(split), np.float32), 0.0).astype(np.float32)
  rows = padded_rows(len(split), batch_size)
  return {
      'image': parallel.stacked_batches(lambda r: images[r], rows, sharding),
      'label': parallel.stacked_batches(lambda r: labels[r], rows, sharding),
      'mask': parallel.stacked_batches(lambda r: mask[r], rows, sharding),
  }


def num_batches(batches: Batch) -> int:
  return next(iter(batches.values())).shape[0]

