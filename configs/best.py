"""The most accurate single model: a wider three-stage batch-norm CNN with
two convolutions in its last stage, random shifts, rotations and scalings,
label smoothing, a moving average of the weights, and after the last epoch
nine test-time views of each test image (mnist_jax/tta.py). Batch 32: on
XLA:CPU this network runs faster per image when a batch's activations stay
in cache (docs/performance.md).

Two variants on networks shaped for the matmul units, where each stage
starts with a space-to-depth instead of ending with a max pool, so that the
7x7 convolutions read many channels (docs/performance.md):
- `--config=configs/best.py:s2d`: 32 then 2x128 channels, dense 128; a step
  takes about 70% of the default's, so 37 epochs fit in the same time.
- `--config=configs/best.py:wide`: 2x256 channels at 7x7, a step above half
  the matmul peak on a 2-core CPU; 14 epochs.
"""

from mnist_jax import config as config_lib

_VARIANTS = {
    's2d': ({'widths': (32, 128), 'dense': 128}, 37),
    'wide': ({'widths': (32, 256), 'dense': 128}, 14),
}


def get_config(variant: str | None = None):
  config = config_lib.default_config()
  config.model_kwargs = {'widths': (32, 64, 128), 'convs_per_stage': (1, 1, 2),
                         'dense': 256, 'dropout': 0.25}
  config.learning_rate = 0.005
  config.label_smoothing = 0.1
  config.ema_decay = 0.9995
  config.max_rotation = 10.0
  config.max_scale = 0.1
  config.batch_size = 32
  config.num_epochs = 27
  config.eval_batch_size = 100
  config.tta = True
  if variant:
    if variant not in _VARIANTS:
      raise ValueError(f'unknown variant {variant!r}; choose one of '
                       f'{", ".join(_VARIANTS)}')
    model_kwargs, config.num_epochs = _VARIANTS[variant]
    config.model_kwargs = {'convs_per_stage': (1, 2), 'dropout': 0.25,
                           'downsample': 'space_to_depth', **model_kwargs}
  return config
