"""The 784-128-10 perceptron the original Go project meant to build."""

from mnist_jax import config as config_lib


def get_config():
  config = config_lib.default_config()
  config.model = 'mlp'
  config.model_kwargs = {'hidden': 128}
  config.learning_rate = 0.001
  config.schedule = 'constant'
  config.max_shift = 0  # no augmentation
  config.batch_size = 128
  config.num_epochs = 10
  return config
