"""Optimizer and learning-rate schedule from a config, with optax."""

import ml_collections
import optax


OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'onecycle')


def create_learning_rate_schedule(config: ml_collections.ConfigDict,
                                  steps_per_epoch: int) -> optax.Schedule:
  """`config.schedule` over `config.num_epochs * steps_per_epoch` steps."""
  total_steps = config.num_epochs * steps_per_epoch
  lr = config.learning_rate
  warmup_steps = int(config.get('warmup_epochs', 0.0) * steps_per_epoch)
  if config.schedule == 'constant':
    return optax.constant_schedule(lr)
  if config.schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, total_steps)
  if config.schedule == 'warmup_cosine':
    warmup_steps = max(warmup_steps, 1)
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1))
  if config.schedule == 'onecycle':
    return optax.cosine_onecycle_schedule(total_steps, lr)
  raise ValueError(f'config.schedule: unknown schedule {config.schedule!r}; '
                  f'choose one of {", ".join(SCHEDULES)}')


def create_optimizer(config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> optax.GradientTransformation:
  """`config.optimizer` driven by the config's learning-rate schedule."""
  lr = create_learning_rate_schedule(config, steps_per_epoch)
  name = config.optimizer
  weight_decay = config.get('weight_decay', 0.0)
  if name == 'sgd':
    return optax.sgd(lr)
  if name in ('momentum', 'nesterov'):
    return optax.sgd(lr, momentum=config.momentum, nesterov=name == 'nesterov')
  if name == 'adam':
    return optax.adam(lr)
  if name == 'adamw':
    return optax.adamw(lr, weight_decay=weight_decay)
  raise ValueError(f'config.optimizer: unknown optimizer {name!r}; '
                  f'choose one of {", ".join(OPTIMIZERS)}')
