"""IDX reading and validation, the real MNIST files, and the tfds source."""

import gzip
import os
import shutil

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


def _files(folder, split='train'):
  images_name, labels_name = data_lib.idx_filenames(split)
  return os.path.join(folder, images_name), os.path.join(folder, labels_name)


def _expect_error(folder, *fragments):
  with pytest.raises((ValueError, TypeError, OSError)) as info:
    data_lib.load_idx_split(folder, 'train')
  message = str(info.value)
  assert '\n' not in message
  for fragment in fragments:
    assert fragment in message, message


def test_bad_magic(tiny_idx_dir):
  images_path, _ = _files(tiny_idx_dir)
  raw = bytearray(open(images_path, 'rb').read())
  raw[3] = 0x04
  open(images_path, 'wb').write(bytes(raw))
  _expect_error(tiny_idx_dir, images_path, 'bad magic number 0x00000804')


def test_truncated_file(tiny_idx_dir):
  images_path, _ = _files(tiny_idx_dir)
  raw = open(images_path, 'rb').read()
  open(images_path, 'wb').write(raw[:-100])
  _expect_error(tiny_idx_dir, images_path, 'truncated')


def test_trailing_data(tiny_idx_dir):
  _, labels_path = _files(tiny_idx_dir)
  with open(labels_path, 'ab') as f:
    f.write(b'\x01\x02')
  _expect_error(tiny_idx_dir, labels_path, 'trailing data')


def test_wrong_image_size(tiny_idx_dir):
  images_path, _ = _files(tiny_idx_dir)
  data_lib.write_idx(images_path, np.zeros((512, 32, 32), np.uint8))
  _expect_error(tiny_idx_dir, images_path, '32x32, expected 28x28')


def test_count_mismatch(tiny_idx_dir):
  _, labels_path = _files(tiny_idx_dir)
  data_lib.write_idx(labels_path, np.zeros(511, np.uint8))
  _expect_error(tiny_idx_dir, '512 images', '511 labels')


def test_label_out_of_range(tiny_idx_dir):
  _, labels_path = _files(tiny_idx_dir)
  labels = np.zeros(512, np.uint8)
  labels[7] = 12
  data_lib.write_idx(labels_path, labels)
  _expect_error(tiny_idx_dir, labels_path, 'label 12 at record 7', '0-9')


def test_corrupt_gzip(tmp_path):
  folder = write_idx_folder(tmp_path, num_train=64, num_test=8, gzip=True)
  images_path = _files(folder)[0] + '.gz'
  raw = open(images_path, 'rb').read()
  open(images_path, 'wb').write(raw[:len(raw) // 2])
  _expect_error(folder, images_path, 'corrupt or truncated gzip')


def test_not_gzip_despite_name(tmp_path):
  folder = write_idx_folder(tmp_path, num_train=64, num_test=8, gzip=True)
  images_path = _files(folder)[0] + '.gz'
  open(images_path, 'wb').write(b'this is not gzip data at all')
  _expect_error(folder, images_path, 'corrupt or truncated gzip')


def test_missing_folder_and_file(tmp_path):
  with pytest.raises((ValueError, TypeError, OSError), match='does not exist'):
    data_lib.load_idx_split(str(tmp_path / 'nope'), 'train')
  with pytest.raises((ValueError, TypeError, OSError), match='has no train-images-idx3-ubyte'):
    data_lib.load_idx_split(str(tmp_path), 'train')


def test_empty_file(tiny_idx_dir):
  images_path, _ = _files(tiny_idx_dir)
  open(images_path, 'wb').close()
  _expect_error(tiny_idx_dir, images_path, 'too short')


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


def test_tfds_source_with_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  config = tiny_config('')
  with tfds.testing.mock_data(num_examples=37):
    split = data_lib.load_split(config, 'test')
  assert split.images.shape == (37, 28, 28, 1) and split.images.dtype == np.uint8
  assert split.labels.dtype == np.int32 and split.labels.max() < 10
  np.testing.assert_array_equal(split.index, np.arange(37))


def test_tfds_unknown_dataset():
  config = tiny_config('', dataset='cifar10')
  with pytest.raises((ValueError, TypeError, OSError), match='config.dataset: unknown dataset'):
    data_lib.load_split(config, 'test')


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
