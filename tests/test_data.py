"""IDX files, the real MNIST files, and the tfds source (data.py). Every
damaged IDX file is a row of test_cli's table."""

import numpy as np
import pytest

from mnist_jax import data as data_lib

from conftest import synthetic_digits, tiny_config, write_idx_folder


@pytest.mark.parametrize('gzipped', [False, True])
def test_idx_round_trip(tmp_path, gzipped):
  folder = write_idx_folder(tmp_path, num_train=50, num_test=30, gzip=gzipped)
  split = data_lib.load_idx_split(folder, 'test')
  images, labels = synthetic_digits(30, seed=1)
  assert split.images.shape == (30, 28, 28, 1) and split.images.dtype == np.uint8
  assert split.labels.dtype == np.int32
  np.testing.assert_array_equal(split.images[..., 0], images)
  np.testing.assert_array_equal(split.labels, labels)
  np.testing.assert_array_equal(split.index, np.arange(30))


def test_real_mnist_files(mnist_dir):
  test = data_lib.load_idx_split(mnist_dir, 'test')
  train = data_lib.load_idx_split(mnist_dir, 'train')
  assert len(test) == 10_000 and len(train) == 60_000
  # The first test labels of the original t10k file, and its class counts.
  np.testing.assert_array_equal(test.labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
  np.testing.assert_array_equal(
      np.bincount(test.labels),
      [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  assert test.images.max() == 255 and test.images.min() == 0


def test_load_split_dispatches_to_idx(tiny_idx_dir):
  split = data_lib.load_split(tiny_config(tiny_idx_dir), 'train')
  assert len(split) == 512


@pytest.mark.slow  # imports TensorFlow
def test_tfds_source_with_mock_data(monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  config = tiny_config('')
  # mock_data fakes the download: no need of the network, which may be off.
  monkeypatch.setattr(data_lib, '_check_reachable', lambda *args: None)
  with tfds.testing.mock_data(num_examples=37):
    split = data_lib.load_split(config, 'test')
  assert split.images.shape == (37, 28, 28, 1) and split.images.dtype == np.uint8
  assert split.labels.dtype == np.int32 and split.labels.max() < 10
  np.testing.assert_array_equal(split.index, np.arange(37))


@pytest.mark.slow
def test_tfds_offline_manual_dir(mnist_dir, tmp_path):
  """tfds prepares MNIST from the original files, in its own order."""
  config = tiny_config('', tfds_data_dir=str(tmp_path / 'tfds'),
                       tfds_manual_dir=mnist_dir)
  from_tfds = data_lib.load_split(config, 'test')
  from_idx = data_lib.load_idx_split(mnist_dir, 'test')
  assert len(from_tfds) == 10_000
  np.testing.assert_array_equal(np.bincount(from_tfds.labels),
                                np.bincount(from_idx.labels))
  assert not np.array_equal(from_tfds.labels, from_idx.labels)  # other order
  # Same images as a set: match each tfds image to its IDX record.
  key = lambda split: sorted(map(bytes, split.images.reshape(len(split), -1)))
  assert key(from_tfds) == key(from_idx)
