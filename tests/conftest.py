"""Shared fixtures: tiny synthetic IDX data, the real MNIST files, tiny
configs, one trained run for the tests that need a checkpoint, and the
scripts run in-process.

`make test` runs on two pytest-xdist workers (pyproject.toml): a session
fixture that trains is made once for both (`once_per_session`), and the
heaviest tests start first (`pytest_collection_modifyitems`)."""

import contextlib
import dataclasses
import fcntl
import io
import json
import logging
import os
import pathlib
import runpy
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags

from mnist_jax import cli
from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax import models
from mnist_jax import parallel
from mnist_jax import steps
from mnist_jax import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.join(REPO_ROOT, '..', 'shared', 'data', 'mnist')


def with_xla_flags(*flags_to_add: str) -> dict[str, str]:
  """An environment for a subprocess: this session's XLA_FLAGS plus
  `flags_to_add`."""
  return {'XLA_FLAGS': ' '.join(filter(None, [os.environ.get('XLA_FLAGS', ''),
                                              *flags_to_add]))}


_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
_made_cache_folders: list[str] = []


def pytest_configure(config):
  """XLA's persistent compilation cache, shared by this session's processes
  (its pytest-xdist workers, the scripts the tests start), new for each
  session unless JAX_COMPILATION_CACHE_DIR names one: many tests compile the
  same programs (a tiny model's initialisation, train step, eval step), each
  in seconds on a 2-core CPU. Set before anything is compiled (jax reads it
  once).

  (XLA's --xla_backend_optimization_level=0 would compile 2-7 times faster,
  but changes results: a tiny run's loss by 0.4% after 8 steps, and 8
  devices no longer match one.)"""
  del config
  if _CACHE_ENV not in os.environ:
    _made_cache_folders.append(
        tempfile.mkdtemp(prefix='mnist_jax_test_xla_cache_'))
    os.environ[_CACHE_ENV] = _made_cache_folders[0]
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  jax.config.update('jax_compilation_cache_dir', os.environ[_CACHE_ENV])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)


def pytest_unconfigure(config):
  del config
  while _made_cache_folders:
    shutil.rmtree(_made_cache_folders.pop(), ignore_errors=True)
    del os.environ[_CACHE_ENV]


# The tests that take longest (tens of seconds each on 2 CPU cores), longest
# first. On pytest-xdist's workers they start before all others, which then
# even out the workers' ends; a single process keeps the files' order.
HEAVIEST_FIRST = (
    'test_parallel.py::test_two_processes_of_four_devices_train_as_one_device',
    'test_reliability.py::test_sigint_sigterm_and_a_full_disk_lose_nothing',
    'test_train.py::test_sigkill_mid_epoch_then_resume_matches_uninterrupted',
    'test_scripts.py::test_fast_config_reaches_99_percent_on_all_test_images',
    'test_data.py::test_tfds_offline_manual_dir',
    'test_scripts.py::test_evaluate_and_outliers_agree_with_training',
    'test_readme.py::test_readme_example_runs',
)


def pytest_collection_modifyitems(config, items):
  del config
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    return
  def rank(item):
    name = item.nodeid.rsplit('/', 1)[-1]
    return (HEAVIEST_FIRST.index(name) if name in HEAVIEST_FIRST
            else len(HEAVIEST_FIRST))
  items.sort(key=rank)  # stable: the rest keep their order


def once_per_session(tmp_path_factory, name: str,
                     make: Callable[[pathlib.Path], Any]) -> tuple[pathlib.Path, Any]:
  """(folder, result): `make(folder)` run in a new folder NAME of this
  session's temporary folder, by whichever of the session's processes (its
  pytest-xdist workers) asks first; the others wait for it (a file lock)
  and read its result, which must be JSON."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent  # the workers' basetemps are popen-gwN in the session's
  folder, result_path = base / name, base / f'{name}.json'
  with open(base / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released as the file closes
    if not result_path.exists():
      shutil.rmtree(folder, ignore_errors=True)  # left by a failed `make`
      folder.mkdir()
      result_path.with_suffix('.tmp').write_text(json.dumps(make(folder)))
      result_path.with_suffix('.tmp').rename(result_path)
    return folder, json.loads(result_path.read_text())


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


# tiny_config as scripts/train.py flags (the rest of it is configs/default.py).
TINY_FLAGS = ('--config.model_kwargs.widths=(8,16)',
              '--config.model_kwargs.dense=32',
              '--config.model_kwargs.dropout=0.1', '--config.batch_size=64',
              '--config.eval_batch_size=64', '--config.num_epochs=2')


def train_args(workdir, data_dir, *extra):
  """scripts/train.py's flags for tiny_config(data_dir), then `extra`."""
  return (f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          *TINY_FLAGS, *extra)


def tiny_state_and_batch(data_dir, **overrides):
  """A tiny config's fresh train state and its first 64 training examples."""
  config = tiny_config(data_dir, **overrides)
  split = data_lib.load_split(config, 'train')
  state = train.create_state_for_config(config, 8, jax.random.PRNGKey(0))
  batch = {'image': jnp.asarray(split.images[:64]),
           'label': jnp.asarray(split.labels[:64])}
  return config, state, batch


# Updates of global norm 1e-3: one step changes a model by a known amount.
CLIPPED_SGD = optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(1.0))


@pytest.fixture(scope='session')
def mlp_state() -> steps.TrainState:
  """A fresh 784-16-10 MLP with CLIPPED_SGD: the cheapest state to compile,
  for tests of what the steps, batches and evaluation do with any model."""
  return steps.create_train_state(models.MLP(hidden=16), CLIPPED_SGD,
                                  jax.random.PRNGKey(0))


# ---------------------------------------------------------- one trained run


# conftest's trained run: tiny_config with these changes. 16 steps in all.
TRAINED = {'num_epochs': 2, 'eval_batch_size': 999,  # rounded up on 8 devices
           'keep_checkpoints': 1, 'log_every_steps': 2, 'tta': True}
TRAINED_STEPS = 16


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  workdir: str  # checkpoints, metrics.jsonl, events, predictions.csv, eval.json
  data_dir: str  # its data, moved since training (pass it as data_dir)
  config: Any  # as trained, but for data_dir, which is where the data is now
  summary: dict[str, Any]  # what train_and_evaluate returned
  messages: list[str]  # absl's log lines while it trained


@contextlib.contextmanager
def absl_messages() -> Iterator[list[str]]:
  """Yields the list of absl's INFO (and higher) messages logged inside."""
  messages = []
  handler = logging.Handler()
  handler.emit = lambda record: messages.append(record.getMessage())
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.INFO)
  logger.addHandler(handler)
  try:
    yield messages
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


def _train_once(root: pathlib.Path) -> dict[str, Any]:
  saved_dir = write_idx_folder(root / 'saved')
  with absl_messages() as messages:
    summary = train.train_and_evaluate(tiny_config(saved_dir, **TRAINED),
                                       str(root / 'work'))
  os.rename(saved_dir, root / 'idx')
  evaluate.evaluate_workdir(str(root / 'work'), str(root / 'idx'))
  return {'summary': summary, 'messages': messages}


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory) -> TrainedRun:
  """tiny_config changed by TRAINED, on synthetic data: two epochs of 8
  steps, one checkpoint kept (of step 16), a progress line every 2 steps,
  test-time views after the last epoch; then evaluated. Its data folder was
  moved after training, so the one saved with the checkpoint is gone.
  Trained once per session (for every pytest-xdist worker). Read-only:
  copy it (`trained_copy`) to change anything."""
  root, result = once_per_session(tmp_path_factory, 'trained', _train_once)
  data_dir = str(root / 'idx')
  return TrainedRun(str(root / 'work'), data_dir,
                    tiny_config(data_dir, **TRAINED), result['summary'],
                    result['messages'])


@pytest.fixture
def trained_copy(trained_run, tmp_path) -> str:
  """A copy of the trained workdir that a test may change."""
  return str(shutil.copytree(trained_run.workdir, tmp_path / 'run'))


def trained_run_args(workdir, data_dir, *extra):
  """scripts/train.py's flags for `trained_run`'s config (which resume a
  copy of it)."""
  return train_args(workdir, data_dir, *(f'--config.{key}={value}'
                                         for key, value in TRAINED.items()),
                    *extra)


# ------------------------------------------- one run that others stop, resume


# What tests stop (kill -9, SIGINT, SIGTERM, a full disk) and resume: three
# epochs of 16 steps (1024 synthetic training images in batches of 64, 100
# test images), the newest three checkpoints kept, a moving average of the
# weights. tiny_config changed by STOPPED, or train_args and STOPPED_FLAGS.
STOPPED = {'num_epochs': 3, 'keep_checkpoints': 3, 'ema_decay': 0.9}
STOPPED_FLAGS = tuple(f'--config.{key}={value}' for key, value in STOPPED.items())
STOPPED_STEPS_PER_EPOCH = 16


@dataclasses.dataclass(frozen=True)
class UninterruptedRun:
  workdir: str  # checkpoints of the epochs' ends, metrics.jsonl
  data_dir: str
  config: Any  # tiny_config(data_dir, **STOPPED)


def _train_uninterrupted(root: pathlib.Path) -> None:
  data_dir = write_idx_folder(root / 'idx', num_train=1024, num_test=100)
  train.train_and_evaluate(tiny_config(data_dir, **STOPPED), str(root / 'work'))


@pytest.fixture(scope='session')
def uninterrupted_run(tmp_path_factory) -> UninterruptedRun:
  """The STOPPED run trained without a stop, in this process (once per
  session): the records that each stopped and resumed run must end with.
  Read-only."""
  root, _ = once_per_session(tmp_path_factory, 'uninterrupted',
                             _train_uninterrupted)
  data_dir = str(root / 'idx')
  return UninterruptedRun(str(root / 'work'), data_dir,
                          tiny_config(data_dir, **STOPPED))


def latest_step_folder(workdir) -> str:
  checkpoints = os.path.join(workdir, 'checkpoints')
  return os.path.join(checkpoints, str(max(
      int(name) for name in os.listdir(checkpoints) if name.isdigit())))


# ------------------------------------------------------------ the scripts


class ScriptExit(Exception):
  """cli.fail's message: what the script prints after 'error: '."""


def _raise_script_exit(message: str, exit_code: int = 2):
  del exit_code
  raise ScriptExit(message)


@contextlib.contextmanager
def script_flags(script: str, *argv: str) -> Iterator[dict[str, Any]]:
  """Defines scripts/SCRIPT's flags, with `argv` as its command line (which
  ml_collections reads when it defines --config), for the `with` block only;
  yields the script's globals. Inside, cli.fail raises ScriptExit instead of
  exiting."""
  path = os.path.join(REPO_ROOT, 'scripts', script)
  before, was_parsed = set(flags.FLAGS), flags.FLAGS.is_parsed()
  saved_argv, saved_fail = sys.argv, cli.fail
  sys.argv, cli.fail = [path, *argv], _raise_script_exit
  cli._definition_errors.clear()  # pylint: disable=protected-access
  try:
    # The module's name is its path, as absl names a __main__ module, so
    # that its flags are the key flags cli.flag_message looks up.
    yield runpy.run_path(path, run_name=path)
  finally:
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)
    if not was_parsed:
      flags.FLAGS.unparse_flags()
    sys.argv, cli.fail = saved_argv, saved_fail
    cli._definition_errors.clear()  # pylint: disable=protected-access


def run_in_process(script: str, *argv: str) -> tuple[str | None, str]:
  """Runs scripts/SCRIPT with `argv` in this process as `cli.run` would, and
  returns (error, stdout): `error` is the line the script would print after
  'error: ' before exiting with code 2, None if it succeeded.

  tests/test_scripts.py checks the real exit, once per script, in a
  subprocess.
  """
  stdout = io.StringIO()
  with script_flags(script, *argv) as script_globals:
    try:
      with contextlib.redirect_stdout(stdout):
        remaining = cli._parse_flags(sys.argv)  # pylint: disable=protected-access
        parallel.maybe_initialize_distributed()
        script_globals['main'](remaining)
    except ScriptExit as e:
      return str(e), stdout.getvalue()
    except cli.INPUT_ERRORS as e:
      return cli.flag_message(str(e) or type(e).__name__), stdout.getvalue()
  return None, stdout.getvalue()


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


def snapshot(folder, ignore=('.lock',)) -> dict[str, tuple[int, bytes] | None]:
  """Every entry under `folder`: files with mtime and bytes, folders as None.

  `ignore`: names left out; a workdir's .lock file names whoever last took
  the lock (mnist_jax/workdir.py), which is not a result.
  """
  entries = {}
  for root, dirs, names in os.walk(folder):
    for name in dirs:
      entries[os.path.relpath(os.path.join(root, name), folder)] = None
    for name in names:
      if name in ignore:
        continue
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        entries[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns,
                                                  f.read())
  return entries
