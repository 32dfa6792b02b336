"""Shared fixtures: tiny synthetic IDX data, the real MNIST files, tiny configs."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import models
from mnist_jax import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.join(REPO_ROOT, '..', 'shared', 'data', 'mnist')


def synthetic_digits(num_examples: int, seed: int = 0):
  """Learnable fake digits: class k is a bright bar at row 2k plus noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, num_examples).astype(np.uint8)
  images = rng.integers(0, 60, (num_examples, 28, 28)).astype(np.uint8)
  for i, label in enumerate(labels):
    images[i, 2 * label + 4: 2 * label + 6, 4:24] = 255
  return images, labels


def write_idx_folder(folder, num_train=512, num_test=200, gzip=False, seed=0):
  os.makedirs(folder, exist_ok=True)
  suffix = '.gz' if gzip else ''
  for split, n in (('train', num_train), ('test', num_test)):
    images, labels = synthetic_digits(n, seed + (split == 'test'))
    images_name, labels_name = data_lib.idx_filenames(split)
    data_lib.write_idx(os.path.join(folder, images_name + suffix), images)
    data_lib.write_idx(os.path.join(folder, labels_name + suffix), labels)
  return str(folder)


@pytest.fixture
def tiny_idx_dir(tmp_path):
  return write_idx_folder(tmp_path / 'idx')


@pytest.fixture(scope='session')
def mnist_dir():
  if not os.path.isdir(MNIST_DIR):
    pytest.skip(f'real MNIST files not found at {MNIST_DIR} '
                '(../shared/data/mnist beside the repo)')
  return os.path.abspath(MNIST_DIR)


def tiny_config(data_dir, **overrides):
  """The default config, shrunk to run in seconds on synthetic data."""
  config = config_lib.default_config()
  config.data_dir = data_dir
  config.model_kwargs = {'widths': (8, 16), 'convs_per_stage': 1, 'dense': 32,
                         'dropout': 0.1}
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 2
  for key, value in overrides.items():  # assignment: update() would merge dicts
    config[key] = value
  return config


def tiny_state_and_batch(data_dir, **overrides):
  """A tiny config's fresh train state and its first 64 training examples."""
  config = tiny_config(data_dir, **overrides)
  split = data_lib.load_split(config, 'train')
  state = train.create_state_for_config(config, 8,
                                   jax.random.PRNGKey(0))
  batch = {'image': jnp.asarray(split.images[:64]),
           'label': jnp.asarray(split.labels[:64])}
  return config, state, batch


def run_script(script, *args, env=None, timeout=600):
  """Runs scripts/SCRIPT in a subprocess from the repo root."""
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run(
      [sys.executable, os.path.join('scripts', script), *args],
      cwd=REPO_ROOT, capture_output=True, text=True, env=full_env,
      timeout=timeout)


def assert_one_line_error(result, *fragments):
  """A script's bad-input exit: code 2, one 'error: ' line holding every
  fragment, no traceback."""
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def snapshot(folder) -> dict[str, tuple[int, bytes] | None]:
  """Every entry under `folder`: files with mtime and bytes, folders as None."""
  entries = {}
  for root, dirs, names in os.walk(folder):
    for name in dirs:
      entries[os.path.relpath(os.path.join(root, name), folder)] = None
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        entries[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns,
                                                  f.read())
  return entries
