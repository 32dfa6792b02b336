"""The fold models of scripts/label_errors.py: configs/default.py's network
and training, shortened to 3 epochs so that five models train in 15-25
minutes on a loaded 2-core CPU. With it, 96.8% of 600 flipped training labels rank
in the top 600 (docs/label_errors.md)."""

from mnist_jax import config as config_lib


def get_config():
  config = config_lib.default_config()
  config.num_epochs = 3
  return config
