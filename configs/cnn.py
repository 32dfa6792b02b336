"""The Flax MNIST example's network and hyper-parameters, for comparison:
SGD with momentum 0.9, learning rate 0.1, batch 128, 10 epochs
(github.com/google/flax, examples/mnist/configs/default.py)."""

from mnist_jax import config as config_lib


def get_config():
  config = config_lib.default_config()
  config.model = 'cnn'
  config.model_kwargs = {}
  config.optimizer = 'momentum'
  config.learning_rate = 0.1
  config.schedule = 'constant'
  config.max_shift = 0  # no augmentation
  config.batch_size = 128
  config.num_epochs = 10
  return config
