"""MNIST-format datasets as numpy arrays, from IDX files or tensorflow-datasets.

Every source gives the same `Split`: uint8 images [N, 28, 28, 1], int32
labels [N] and a stable example index [N]. For IDX files the index is the
record number in the file, so test index 947 is the 948th image of the
original t10k file and of every published analysis. For tfds it is the
position in tfds's deterministic read order, which is *not* the IDX order.
"""

import dataclasses
import gzip
import os
import struct
import zlib

import ml_collections
import numpy as np

from mnist_jax import tensorflow_env

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
SPLITS = ('train', 'test')
TFDS_DATASETS = ('mnist', 'fashion_mnist', 'kmnist')

# IDX magic numbers: two zero bytes, type 0x08 (uint8), number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_IDX_PREFIX = {'train': 'train', 'test': 't10k'}


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a dataset, held in host memory."""
  images: np.ndarray  # uint8 [N, 28, 28, 1]
  labels: np.ndarray  # int32 [N]
  index: np.ndarray  # int64 [N], stable example id (see module docstring)

  def __len__(self) -> int:
    return len(self.labels)


def idx_filenames(split: str) -> tuple[str, str]:
  """The (images, labels) file names of a split, without '.gz'."""
  prefix = _IDX_PREFIX[split]
  return f'{prefix}-images-idx3-ubyte', f'{prefix}-labels-idx1-ubyte'


def _find_idx_file(data_dir: str, name: str) -> str:
  for candidate in (name, name + '.gz'):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f'data folder {data_dir!r} has no {name} or {name}.gz '
                  '(expected the four MNIST IDX files)')


def _read_bytes(path: str) -> bytes:
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        return f.read()
    with open(path, 'rb') as f:
      return f.read()
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise ValueError(f'{path}: corrupt or truncated gzip file ({e})') from None
  except OSError as e:
    raise OSError(f'{path}: cannot read: {e.strerror or e}') from None


def read_idx(path: str, expected_magic: int) -> np.ndarray:
  """Reads one uint8 IDX file, checking its header against its contents."""
  raw = _read_bytes(path)
  if len(raw) < 4:
    raise ValueError(f'{path}: file too short for an IDX header '
                    f'({len(raw)} bytes)')
  (magic,) = struct.unpack('>I', raw[:4])
  if magic != expected_magic:
    raise ValueError(f'{path}: bad magic number 0x{magic:08x}, expected '
                    f'0x{expected_magic:08x}')
  ndim = magic & 0xFF
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise ValueError(f'{path}: truncated IDX header ({len(raw)} bytes)')
  shape = struct.unpack(f'>{ndim}I', raw[4:header_size])
  expected_size = int(np.prod(shape))
  payload = len(raw) - header_size
  if payload != expected_size:
    problem = 'truncated' if payload < expected_size else 'has trailing data'
    raise ValueError(f'{path}: {problem}: header says shape {shape} '
                    f'({expected_size} bytes of data), file holds {payload}')
  return np.frombuffer(raw, np.uint8, offset=header_size).reshape(shape)


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as an IDX file (gzipped if `path` ends in .gz)."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = struct.pack('>I', 0x00000800 | array.ndim)
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(header + array.tobytes())


def load_idx_split(data_dir: str, split: str) -> Split:
  """Loads `split` from a folder of the four IDX files, validated."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'data_dir {data_dir!r}: no such folder')
  images_name, labels_name = idx_filenames(split)
  images_path = _find_idx_file(data_dir, images_name)
  labels_path = _find_idx_file(data_dir, labels_name)
  images = read_idx(images_path, _IMAGES_MAGIC)
  labels = read_idx(labels_path, _LABELS_MAGIC)
  if images.shape[1:] != IMAGE_SHAPE[:2]:
    raise ValueError(f'{images_path}: images are {images.shape[1]}x'
                    f'{images.shape[2]}, expected 28x28')
  if len(images) != len(labels):
    raise ValueError(f'{images_path} holds {len(images)} images but '
                    f'{labels_path} holds {len(labels)} labels')
  if len(labels) == 0:
    raise ValueError(f'{labels_path}: no records')
  bad = np.flatnonzero(labels >= NUM_CLASSES)
  if bad.size:
    raise ValueError(f'{labels_path}: label {labels[bad[0]]} at record '
                    f'{bad[0]} is outside 0-{NUM_CLASSES - 1} '
                    f'({bad.size} such labels)')
  return Split(images=images.reshape((-1,) + IMAGE_SHAPE),
               labels=labels.astype(np.int32),
               index=np.arange(len(labels), dtype=np.int64))


def load_tfds_split(name: str, split: str, data_dir: str | None = None,
                    manual_dir: str | None = None) -> Split:
  """Loads `split` of a tfds dataset, preparing it first if needed.

  `manual_dir` is tfds's offline path: a folder holding the dataset's original
  download files (for MNIST, the four .gz IDX files), checked against tfds's
  checksums instead of being downloaded.
  """
  if name not in TFDS_DATASETS:
    raise ValueError(f'config.dataset: unknown dataset {name!r}; '
                    f'choose one of {", ".join(TFDS_DATASETS)}')
  tensorflow_env.import_tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=data_dir or None)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  try:
    builder.download_and_prepare(download_config=download_config)
  except Exception as e:  # tfds raises many types; all mean "could not get it"
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise ValueError(f'tfds could not prepare {name!r} ({type(e).__name__}: '
                    f'{first_line}); without network, set config.data_dir '
                    'to a folder of IDX files or config.tfds_manual_dir') from None
  chunks = list(tfds.as_numpy(builder.as_dataset(
      split=split, batch_size=10_000, shuffle_files=False)))
  images = np.concatenate([c['image'] for c in chunks]).astype(np.uint8)
  labels = np.concatenate([c['label'] for c in chunks]).astype(np.int32)
  return Split(images=images.reshape((-1,) + IMAGE_SHAPE), labels=labels,
               index=np.arange(len(labels), dtype=np.int64))


def load_split(config: ml_collections.ConfigDict, split: str) -> Split:
  """The split named by a config: IDX folder if `data_dir` is set, else tfds."""
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}')
  if config.data_dir:
    return load_idx_split(os.path.expanduser(config.data_dir), split)
  return load_tfds_split(config.dataset, split,
                         data_dir=config.get('tfds_data_dir') or None,
                         manual_dir=config.get('tfds_manual_dir') or None)
