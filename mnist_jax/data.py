"""MNIST-format datasets as numpy arrays, from IDX files or tensorflow-datasets.

Every source gives the same `Split`: uint8 images [N, 28, 28, 1], int32
labels [N] and a stable example index [N]. For IDX files the index is the
record number in the file, so test index 947 is the 948th image of the
original t10k file and of every published analysis. For tfds it is the
position in tfds's deterministic read order, which is *not* the IDX order.
"""

import dataclasses
import gzip
import hashlib
import os
import socket
import struct
import urllib.parse
import zlib

import ml_collections
import numpy as np

from mnist_jax import tensorflow_env

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
SPLITS = ('train', 'test')
TFDS_DATASETS = ('mnist', 'fashion_mnist', 'kmnist')
DATASET_TITLES = {'mnist': 'MNIST', 'fashion_mnist': 'Fashion-MNIST',
                  'kmnist': 'Kuzushiji-MNIST'}
CLASS_NAMES = {
    'mnist': tuple(str(k) for k in range(NUM_CLASSES)),
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                      'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
    'kmnist': ('o', 'ki', 'su', 'tsu', 'na', 'ha', 'ma', 'ya', 're', 'wo'),
}
# SHA-256 of the labels (one byte each, as in the IDX files after their
# header) of the published files, which tell the datasets apart whatever
# the compression. A folder matching none (synthetic, relabelled or
# Kuzushiji-MNIST files) is taken under the name config.dataset gives it.
KNOWN_LABELS_SHA256 = {
    # train-labels-idx1-ubyte, t10k-labels-idx1-ubyte
    '1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13': 'mnist',
    'ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5': 'mnist',
    '657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7': 'fashion_mnist',
    '3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9': 'fashion_mnist',
}

# IDX magic numbers: two zero bytes, type 0x08 (uint8), number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_IDX_PREFIX = {'train': 'train', 'test': 't10k'}
_GZIP_MAGIC = b'\x1f\x8b'


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
  if raw[:2] == _GZIP_MAGIC:
    problem = ('decompressed, it is gzip again (compressed twice?); decompress '
               'it once more' if path.endswith('.gz') else
               'gzip-compressed but not named .gz; add .gz to its name')
    raise ValueError(f'{path}: {problem}')
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
  if os.path.isfile(data_dir):
    raise NotADirectoryError(f'data_dir {data_dir!r} is a file, not a folder '
                             'of IDX files')
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


_OFFLINE_HINT = ('without network, set config.data_dir to a folder of IDX '
                 'files or config.tfds_manual_dir')


def _check_reachable(name: str, url: str) -> None:
  """Fails in seconds where tfds would take minutes: offline, its downloader
  retries every file ten times with growing pauses."""
  parsed = urllib.parse.urlparse(url)
  address = (parsed.hostname, parsed.port or
             (443 if parsed.scheme == 'https' else 80))
  try:
    socket.create_connection(address, timeout=5).close()
  except OSError as e:
    raise ValueError(f'tfds would download {name!r} from {parsed.hostname}, '
                     f'which is unreachable ({e}); {_OFFLINE_HINT}') from None


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
  if not builder.is_prepared() and not manual_dir:
    _check_reachable(name, builder.URL)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  try:
    builder.download_and_prepare(download_config=download_config)
  except Exception as e:  # tfds raises many types; all mean "could not get it"
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise ValueError(f'tfds could not prepare {name!r} ({type(e).__name__}: '
                    f'{first_line}); {_OFFLINE_HINT}') from None
  chunks = list(tfds.as_numpy(builder.as_dataset(
      split=split, batch_size=10_000, shuffle_files=False)))
  images = np.concatenate([c['image'] for c in chunks]).astype(np.uint8)
  labels = np.concatenate([c['label'] for c in chunks]).astype(np.int32)
  return Split(images=images.reshape((-1,) + IMAGE_SHAPE), labels=labels,
               index=np.arange(len(labels), dtype=np.int64))


def identify(split: Split) -> str | None:
  """The published dataset whose labels `split` holds, or None."""
  digest = hashlib.sha256(split.labels.astype(np.uint8).tobytes()).hexdigest()
  return KNOWN_LABELS_SHA256.get(digest)


def dataset_title(dataset: str | None, split: Split, from_idx: bool) -> str:
  """A name for titles: the published one where tfds loaded `split` or its
  IDX labels are the published files', else one that says they are not."""
  if dataset and (not from_idx or identify(split) == dataset):
    return DATASET_TITLES.get(dataset, dataset)
  named = f' (config.dataset={dataset!r})' if dataset else ''
  return f'Unrecognised IDX files{named}'


def check_dataset(dataset: str, data_dir: str, split: Split) -> None:
  """Refuses IDX files of a published dataset other than `dataset`."""
  found = identify(split)
  if found is not None and found != dataset:
    raise ValueError(
        f'config.dataset={dataset!r}, but config.data_dir {data_dir!r} holds '
        f'{DATASET_TITLES[found]} (its labels are those of the published '
        f'files); set config.dataset={found}')


def load_split(config: ml_collections.ConfigDict, split: str) -> Split:
  """The split named by a config: IDX folder if `data_dir` is set, else tfds."""
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}')
  if config.data_dir:
    loaded = load_idx_split(os.path.expanduser(config.data_dir), split)
    check_dataset(config.dataset, config.data_dir, loaded)
    return loaded
  return load_tfds_split(config.dataset, split,
                         data_dir=config.get('tfds_data_dir') or None,
                         manual_dir=config.get('tfds_manual_dir') or None)
