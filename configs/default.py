"""The recommended model: a three-stage batch-norm CNN (16-32-64 channels,
dense 256) trained with Adam one-cycle and random shifts, 14 epochs.

Every key and its meaning is in `mnist_jax/config.py`; the other configs
start from the same defaults and change a few keys. Any key can be
overridden on the command line: --config.num_epochs=3.
"""

from mnist_jax import config as config_lib


def get_config():
  return config_lib.default_config()
