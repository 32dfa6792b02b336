"""Data parallelism with jax.sharding: one mesh axis, batches split along it.

The same code runs on one CPU, one GPU, eight devices or many hosts: the
mesh is built from `jax.devices()` (all processes' devices), parameters are
replicated, and each batch's leading axis is sharded over the 'data' axis.
Arrays of stacked batches [num_batches, batch, ...] are sharded on their
second axis so that indexing a batch inside a jitted step stays local.
"""

import os
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


DATA_AXIS = 'data'


def maybe_initialize_distributed() -> None:
  """Starts jax.distributed when launched as one process of several.

  Triggered by the standard variables (JAX_COORDINATOR_ADDRESS with
  JAX_NUM_PROCESSES and JAX_PROCESS_ID) or a cluster jax detects by itself
  (SLURM, Cloud TPU, ...), which the variable MNIST_JAX_DISTRIBUTED=1 asks for.
  """
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    jax.distributed.initialize(
        coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
        num_processes=_int_from_env('JAX_NUM_PROCESSES'),
        process_id=_int_from_env('JAX_PROCESS_ID'))
  elif os.environ.get('MNIST_JAX_DISTRIBUTED') == '1':
    jax.distributed.initialize()
  else:
    return
  logging.info('jax.distributed: process %d of %d, %d local devices of %d',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def _int_from_env(name: str) -> int:
  value = os.environ.get(name, '')
  if not value.isdigit():
    raise ValueError(f'environment variable {name}={value!r}: JAX_COORDINATOR_ADDRESS '
                    'is set, so it must be a non-negative integer')
  return int(value)


def create_mesh() -> Mesh:
  """A 1-D mesh over every device of every process.

  Auto axis type: the compiler propagates shardings, so models need no
  sharding annotations (jax.make_mesh defaults to explicit axes).
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def stacked_batches_sharding(mesh: Mesh) -> NamedSharding:
  """For [num_batches, batch, ...] arrays: the batch axis over the devices."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, name: str) -> None:
  """Raises ValueError, naming the parameter `name`, unless `batch_size`
  splits evenly over the mesh's devices."""
  if batch_size % mesh.size:
    raise ValueError(f'{name}={batch_size} does not divide over '
                     f'{mesh.size} devices; choose a multiple of {mesh.size}')


def device_batch_size(batch_size: int, num_devices: int) -> int:
  """The smallest multiple of the device count that is >= `batch_size`.

  For evaluation, which pads the last batch and masks the padding: any
  eval_batch_size works once it splits over the devices, so rounding it up
  keeps a config's (or a checkpoint's) value usable on any device count.
  """
  return -(-batch_size // num_devices) * num_devices


def stacked_batches(gather: Callable[[np.ndarray], np.ndarray],
                    rows: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array [num_batches, batch, ...] with `gather(rows)` as contents.

  `rows` is an integer array [num_batches, batch] of example positions.
  Each process gathers (on the host) and transfers only the rows of the shards
  its own devices hold, so no host ever builds the whole global array.
  """
  example_shape = gather(rows[:1, :1]).shape[2:]
  global_shape = rows.shape + example_shape
  return jax.make_array_from_callback(
      global_shape, sharding, lambda index: gather(rows[index[:2]]))


def is_main_process() -> bool:
  return jax.process_index() == 0
