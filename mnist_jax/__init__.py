"""MNIST in JAX/Flax, and which test images the model gets wrong.

The pieces a notebook needs:

    import jax, optax, mnist_jax
    model = mnist_jax.ConvNet(widths=(16, 32))
    state = mnist_jax.create_train_state(model, optax.adam(1e-3),
                                         jax.random.key(0))
    state, metrics = jax.jit(mnist_jax.train_step)(state, batch)

`batch` is {'image': uint8 [B, 28, 28, 1] or float in [0, 1], 'label': int
[B]}. `train_and_evaluate(config, workdir)` is the whole training run that
scripts/train.py calls; `default_config()` has every key it reads.

Importing the package routes XLA:CPU's convolutions to XLA's own kernels
(mnist_jax/xla_cpu.py): import it before the first JAX computation.
"""

from mnist_jax import xla_cpu

xla_cpu.prefer_xla_convolutions()

# pylint: disable=g-import-not-at-top,wrong-import-position

from mnist_jax.config import default_config
from mnist_jax.data import Split, load_idx_split, load_split
from mnist_jax.models import CNN, MLP, ConvNet, create_model
from mnist_jax.optim import create_optimizer
from mnist_jax.steps import (TrainState, create_train_state, eval_step,
                             predict_step, train_step)
from mnist_jax.train import train_and_evaluate

__all__ = [
    'CNN', 'ConvNet', 'MLP', 'Split', 'TrainState', 'create_model',
    'create_optimizer', 'create_train_state', 'default_config', 'eval_step',
    'load_idx_split', 'load_split', 'predict_step', 'train_and_evaluate',
    'train_step',
]
