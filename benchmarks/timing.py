"""Speed figures: train-step time, FLOP utilisation, time to accuracy.

Everything is measured in the same process on the same devices: the matmul
peak used for the utilisation is measured here too, not quoted. Runs
unchanged on CPU, GPU and TPU.
"""

import os
import platform
import statistics
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mnist_jax import config_checks
from mnist_jax import data as data_lib
from mnist_jax import io_utils
from mnist_jax import metrics_log
from mnist_jax import models
from mnist_jax import op_profile
from mnist_jax import parallel
from mnist_jax import train
from mnist_jax.errors import UserError

ACCURACY_MILESTONES = (0.99, 0.995)


def _median_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_flops(mesh: Mesh, size: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of float32 [size, size] matmuls, one per device of `mesh` at once.

  The practical peak of the devices the train step runs on. Measured on all
  of them together rather than on one and multiplied: devices that share
  hardware (`--xla_force_host_platform_device_count` on one CPU) share its
  peak too.
  """
  sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))
  a = jax.jit(lambda: jax.random.normal(jax.random.PRNGKey(0),
                                       (mesh.size, size, size), jnp.float32),
              out_shardings=sharding)()
  matmuls = jax.jit(lambda x: x @ x, out_shardings=sharding)
  seconds = _median_seconds(matmuls, a, repeats=repeats)
  return mesh.size * 2 * size**3 / seconds


def _cost_flops(compiled, num_devices: int) -> float:
  """FLOPs of one execution on all devices.

  XLA's cost analysis counts the partitioned program, i.e. one device's share.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per device
    analysis = analysis[0]
  return num_devices * float(analysis.get('flops', float('nan')))


def _synthetic_split(num_examples: int) -> data_lib.Split:
  """Random uint8 images: step time does not depend on pixel values."""
  rng = np.random.default_rng(0)
  return data_lib.Split(
      images=rng.integers(0, 256, (num_examples,) + data_lib.IMAGE_SHAPE, np.uint8),
      labels=rng.integers(0, 10, num_examples).astype(np.int32),
      index=np.arange(num_examples))


def time_train_step(config: ml_collections.ConfigDict, steps: int = 30,
                    profile_ops: int = 0) -> dict[str, Any]:
  """Median time of the jitted train step at the config's batch size; with
  `profile_ops`, also the step's costliest ops from a profiler trace."""
  mesh = parallel.create_mesh()
  parallel.check_divisible(config.batch_size, mesh, 'batch_size')
  replicated = parallel.replicated(mesh)
  num_batches = 4
  rows = np.arange(num_batches * config.batch_size).reshape(num_batches, -1)
  batches = train.device_train_batches(
      _synthetic_split(rows.size), rows, parallel.stacked_batches_sharding(mesh))
  state = train.create_train_state(models.create_model(config), config, 100,
                                   jax.random.PRNGKey(config.seed), replicated)
  totals = jax.device_put(train.zero_totals(), replicated)
  train_fn = train.make_train_fn(config, mesh)
  start = time.perf_counter()
  compiled = train_fn.lower(state, totals, batches, 0).compile()
  compile_seconds = time.perf_counter() - start
  state, totals = compiled(state, totals, batches, 0)
  jax.block_until_ready(totals)
  times = []
  for i in range(steps):
    start = time.perf_counter()
    state, totals = compiled(state, totals, batches, i % num_batches)
    jax.block_until_ready(totals)
    times.append(time.perf_counter() - start)
  step_seconds = statistics.median(times)
  result = {'step_ms': 1000 * step_seconds,
            'images_per_s': config.batch_size / step_seconds,
            'flops_per_step': _cost_flops(compiled, mesh.size),
            'compile_s': compile_seconds}
  if profile_ops:
    def run_steps():
      nonlocal state, totals
      for i in range(steps):
        state, totals = compiled(state, totals, batches, i % num_batches)
      return totals
    result['top_ops'] = op_profile.costliest_ops(compiled, run_steps, steps,
                                                 profile_ops)
  return result


def seconds_to_accuracy(records: list[dict[str, Any]],
                        accuracy: float) -> float | None:
  """Elapsed seconds at the end of the first epoch reaching `accuracy`."""
  for record in records:
    if record['test_accuracy'] >= accuracy:
      return record['elapsed']
  return None


def machine_description() -> dict[str, Any]:
  device = jax.devices()[0]
  return {'platform': device.platform, 'device_kind': device.device_kind,
          'device_count': jax.device_count(), 'cpu_count': os.cpu_count(),
          'processor': platform.processor() or platform.machine(),
          'jax_version': jax.__version__}


def check_config_and_workdir(config: ml_collections.ConfigDict,
                             workdir: str | None, steps_only: bool) -> None:
  """UserError for a bad config, or for a training run's folder that holds
  files (time to accuracy needs a fresh run, not a resumed one) or cannot be
  written; creates that folder."""
  config_checks.validate_config(config)
  if not workdir or steps_only:
    return
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise UserError(f'--workdir {workdir!r} is not empty; the benchmark times '
                    'a fresh training run, so give a new folder')
  io_utils.ensure_writable_dir(workdir, '--workdir')


def run_benchmark(config: ml_collections.ConfigDict, workdir: str | None = None,
                  steps_only: bool = False, steps: int = 30,
                  profile_ops: int = 0) -> dict[str, Any]:
  """Step timing, utilisation and (unless `steps_only`) a real training run.

  With `profile_ops` > 0 the result has `top_ops`: the step's costliest
  operations (see `op_profile`; on CPU call `op_profile.enable_cpu_op_events`
  before any computation).
  """
  check_config_and_workdir(config, workdir, steps_only)
  result = {'machine': machine_description(), 'model': config.model,
            'batch_size': config.batch_size}
  result.update(time_train_step(config, steps, profile_ops))
  result['matmul_peak_flops'] = matmul_peak_flops(parallel.create_mesh())
  result['utilization'] = (result['flops_per_step'] / (result['step_ms'] / 1000)
                           / result['matmul_peak_flops'])
  if steps_only:
    return result
  with tempfile.TemporaryDirectory() as scratch:
    run_dir = workdir or scratch
    summary = train.train_and_evaluate(config, run_dir)
    records = metrics_log.read_metrics(run_dir)
  for milestone in ACCURACY_MILESTONES:
    result[f'seconds_to_{100 * milestone:.1f}'] = seconds_to_accuracy(records, milestone)
  result['final_test_accuracy'] = summary['test_accuracy']
  if 'test_accuracy_tta' in summary:
    result['final_test_accuracy_tta'] = summary['test_accuracy_tta']
  result['test_examples'] = summary['test_examples']
  result['num_epochs'] = summary['epoch']
  result['train_seconds'] = summary['elapsed']
  result['epochs'] = [{k: r[k] for k in ('epoch', 'test_accuracy', 'elapsed')}
                      for r in records]
  return result
