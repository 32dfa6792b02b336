"""99% test accuracy in one epoch: a narrow two-stage batch-norm CNN with
unpadded convolutions, each stage max-pooled before its batch norm, batch
128 with label smoothing, no augmentation and no dropout. The config timed
against the peer recipe (benchmarks/peers/torch_fast_mnist.py)."""

from mnist_jax import config as config_lib


def get_config():
  config = config_lib.default_config()
  config.model_kwargs = {'widths': (16, 32), 'convs_per_stage': 1,
                         'dense': 256, 'dropout': 0.0,
                         'downsample': 'pool_before_norm', 'padding': 'VALID'}
  config.max_shift = 0
  config.num_epochs = 1
  config.batch_size = 128
  config.learning_rate = 0.015
  config.label_smoothing = 0.1
  config.eval_batch_size = 250  # faster than 1000 on a CPU (cache)
  return config
