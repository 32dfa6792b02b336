"""Config validation: every bad value is one UserError naming its flag."""

import ml_collections

from mnist_jax import models
from mnist_jax import optim
from mnist_jax.errors import UserError

REQUIRED_KEYS = ('dataset', 'data_dir', 'tfds_data_dir', 'tfds_manual_dir',
                 'model', 'model_kwargs', 'optimizer', 'learning_rate',
                 'momentum', 'weight_decay', 'schedule', 'warmup_epochs',
                 'label_smoothing', 'ema_decay', 'max_shift', 'max_rotation',
                 'max_scale', 'elastic_alpha', 'elastic_sigma', 'batch_size',
                 'num_epochs', 'seed', 'eval_batch_size', 'tta',
                 'log_every_steps', 'checkpoint_every_steps',
                 'keep_checkpoints')


# Keys added after the first release, with the value that means "off": a
# checkpoint saved before a key existed was trained with that value.
LATER_KEYS = {'max_rotation': 0.0, 'max_scale': 0.0, 'ema_decay': 0.0,
              'elastic_alpha': 0.0, 'elastic_sigma': 4.0, 'tta': False}


def with_later_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` plus any missing LATER_KEYS at their "off" values."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in LATER_KEYS.items():
    if key not in config:
      config[key] = value
  return config


def _require(condition: bool, flag: str, message: str) -> None:
  if not condition:
    raise UserError(f'--config.{flag}: {message}')


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
  _require(isinstance(config.seed, int) and 0 <= config.seed < 2**32, 'seed',
           f'must be an integer in [0, 2**32), got {config.seed!r}')
  _require(0 <= config.momentum < 1, 'momentum',
           f'must be in [0, 1), got {config.momentum!r}')
  _require(config.weight_decay >= 0, 'weight_decay',
           f'must be >= 0, got {config.weight_decay!r}')
