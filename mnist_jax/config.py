"""The run configuration: its keys with their defaults, and their checks.

`default_config()` is the one place every key is defined and explained;
`configs/*.py` start from it and change a few keys. Every bad value is a
ValueError naming its key as `config.KEY`.
"""

import math

import ml_collections

from mnist_jax import models
from mnist_jax import optim


def default_config() -> ml_collections.ConfigDict:
  """Every key, at the values of the recommended model (configs/default.py)."""
  config = ml_collections.ConfigDict()
  # Data: a folder of the four IDX files, or (data_dir empty) tfds.
  config.dataset = 'mnist'  # tfds name: mnist, fashion_mnist or kmnist
  config.data_dir = ''  # folder of train-images-idx3-ubyte[.gz], ...
  config.tfds_data_dir = ''  # tfds's cache folder; empty: ~/tensorflow_datasets
  config.tfds_manual_dir = ''  # tfds offline: folder of the original .gz files
  # Model: a name from mnist_jax.models.MODELS and its constructor arguments.
  config.model = 'convnet'
  config.model_kwargs = ml_collections.ConfigDict(
      {'widths': (16, 32, 64), 'convs_per_stage': 1, 'dense': 256,
       'dropout': 0.25})
  # Optimization.
  config.optimizer = 'adam'  # sgd, momentum, nesterov, adam, adamw
  config.learning_rate = 0.01
  config.momentum = 0.9  # momentum and nesterov only
  config.weight_decay = 0.0  # adamw only
  config.schedule = 'onecycle'  # constant, cosine, warmup_cosine, onecycle
  config.warmup_epochs = 0.0  # warmup_cosine only
  config.label_smoothing = 0.0
  config.ema_decay = 0.0  # > 0: evaluate a moving average of the weights
  config.max_shift = 2  # random translation of training images, pixels
  config.max_rotation = 0.0  # random rotation, degrees (0: none)
  config.max_scale = 0.0  # random scaling in [1 - s, 1 + s] (0: none)
  config.elastic_alpha = 0.0  # elastic distortion strength, pixels (0: none)
  config.elastic_sigma = 4.0  # smoothness of the elastic distortion, pixels
  config.batch_size = 64  # small batches stay in cache: faster on CPU
  config.num_epochs = 14
  config.seed = 0
  # Evaluation, logging and checkpoints.
  config.eval_batch_size = 1000
  config.tta = False  # also evaluate 9 views of each test image (mnist_jax/tta.py)
  config.log_every_steps = 0  # 0: ten progress lines per epoch
  config.checkpoint_every_steps = 0  # 0: only at the end of each epoch
  config.keep_checkpoints = 2
  # Stop (exit 2) when an epoch's mean training loss so far exceeds this at a
  # progress line, checkpoint or epoch end: 10x the ln(10) = 2.3 of a model
  # that guesses. 0: only non-finite losses stop a run.
  config.divergence_loss = 23.0
  return config


REQUIRED_KEYS = tuple(default_config().keys())


# Keys added after the first release, with the value that means "off": a
# checkpoint saved before a key existed was trained with that value.
LATER_KEYS = {'max_rotation': 0.0, 'max_scale': 0.0, 'ema_decay': 0.0,
              'elastic_alpha': 0.0, 'elastic_sigma': 4.0, 'tta': False,
              'divergence_loss': 0.0}


def with_later_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` plus any missing LATER_KEYS at their "off" values."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in LATER_KEYS.items():
    if key not in config:
      config[key] = value
  return config


def _require(condition: bool, key: str, message: str) -> None:
  if not condition:
    raise ValueError(f'config.{key}: {message}')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names and ranges before any data is read or any file written."""
  for key in REQUIRED_KEYS:
    _require(key in config, key, 'missing from the config file')
  _require(config.model in models.MODELS, 'model',
           f'unknown model {config.model!r}; choose one of '
           f'{", ".join(sorted(models.MODELS))}')
  _require(config.optimizer in optim.OPTIMIZERS, 'optimizer',
           f'unknown optimizer {config.optimizer!r}; choose one of '
           f'{", ".join(optim.OPTIMIZERS)}')
  _require(config.schedule in optim.SCHEDULES, 'schedule',
           f'unknown schedule {config.schedule!r}; choose one of '
           f'{", ".join(optim.SCHEDULES)}')
  for key in ('batch_size', 'eval_batch_size', 'num_epochs'):
    _require(isinstance(config[key], int) and config[key] > 0, key,
             f'must be a positive integer, got {config[key]!r}')
  _require(config.learning_rate > 0, 'learning_rate',
           f'must be positive, got {config.learning_rate!r}')
  _require(0 <= config.warmup_epochs < config.num_epochs, 'warmup_epochs',
           f'must be in [0, num_epochs={config.num_epochs}), '
           f'got {config.warmup_epochs!r}')
  _require(0 <= config.label_smoothing < 1, 'label_smoothing',
           f'must be in [0, 1), got {config.label_smoothing!r}')
  _require(0 <= config.ema_decay < 1, 'ema_decay',
           f'must be in [0, 1), got {config.ema_decay!r}')
  _require(0 <= config.max_shift <= 8, 'max_shift',
           f'must be 0-8 pixels, got {config.max_shift!r}')
  _require(0 <= config.max_rotation <= 45, 'max_rotation',
           f'must be 0-45 degrees, got {config.max_rotation!r}')
  _require(0 <= config.max_scale < 1, 'max_scale',
           f'must be in [0, 1), got {config.max_scale!r}')
  _require(0 <= config.elastic_alpha <= 100, 'elastic_alpha',
           f'must be 0-100 pixels, got {config.elastic_alpha!r}')
  _require(0.5 <= config.elastic_sigma <= 10, 'elastic_sigma',
           f'must be 0.5-10 pixels, got {config.elastic_sigma!r}')
  _require(isinstance(config.tta, bool), 'tta',
           f'must be true or false, got {config.tta!r}')
  _require(config.checkpoint_every_steps >= 0, 'checkpoint_every_steps',
           f'must be >= 0, got {config.checkpoint_every_steps!r}')
  _require(config.keep_checkpoints >= 1, 'keep_checkpoints',
           f'must be >= 1, got {config.keep_checkpoints!r}')
  _require(config.log_every_steps >= 0, 'log_every_steps',
           f'must be >= 0, got {config.log_every_steps!r}')
  _require(0 <= config.divergence_loss < math.inf, 'divergence_loss',
           f'must be a finite number >= 0 (0: off), got '
           f'{config.divergence_loss!r}')
  _require(isinstance(config.seed, int) and 0 <= config.seed < 2**32, 'seed',
           f'must be an integer in [0, 2**32), got {config.seed!r}')
  _require(0 <= config.momentum < 1, 'momentum',
           f'must be in [0, 1), got {config.momentum!r}')
  _require(config.weight_decay >= 0, 'weight_decay',
           f'must be >= 0, got {config.weight_decay!r}')
