"""The 784-128-10 perceptron the original Go project meant to build."""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'mlp'
  config.model_kwargs = {'hidden': 128}
  config.optimizer = 'adam'
  config.learning_rate = 0.001
  config.schedule = 'constant'
  config.max_shift = 0  # no augmentation
  config.label_smoothing = 0.0
  config.batch_size = 128
  config.num_epochs = 10
  return config
