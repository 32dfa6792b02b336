"""The project's speed figures: train-step time, FLOP utilisation against a
matmul peak measured in the same process, and time to accuracy from a real
training run (`mnist_jax.train.train_and_evaluate`, compilation included).

Nothing here knows about peers or rounds (suite.py); every function runs
unchanged on CPU, GPU and TPU.
"""

import os
import platform
import statistics
import tempfile
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import jaxlib
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import op_profile
from mnist_jax import batches as batches_lib
from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import metrics_log
from mnist_jax import parallel
from mnist_jax import train
from mnist_jax import xla_cpu

ACCURACY_MILESTONES = (0.99, 0.995)

# /proc/cpuinfo flags that say which vector and matrix units the CPU has.
ISA_FLAGS = ('avx', 'avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl',
             'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'avx_vnni',
             'amx_tile', 'amx_bf16', 'amx_int8', 'asimd', 'sve')


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall time of `fn()` (blocked on) after one untimed call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_flops(mesh: Mesh, size: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of float32 [size, size] matmuls, one per device of `mesh` at once.

  The practical peak of the devices the train step runs on, measured on all
  of them together: devices that share hardware (several XLA:CPU devices on
  one CPU) share its peak too.
  """
  sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))
  a = jax.jit(lambda: jax.random.normal(jax.random.PRNGKey(0),
                                       (mesh.size, size, size), jnp.float32),
              out_shardings=sharding)()
  matmuls = jax.jit(lambda x: x @ x, out_shardings=sharding)
  seconds = median_seconds(lambda: matmuls(a), repeats)
  return mesh.size * 2 * size**3 / seconds


def cost_flops(compiled: Any, num_devices: int) -> float:
  """FLOPs of one execution on all devices (XLA's cost analysis counts one
  device's share of a partitioned program)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return num_devices * float(analysis.get('flops', float('nan')))


def synthetic_split(num_examples: int, seed: int = 0) -> data_lib.Split:
  """Random uint8 images: a step's time does not depend on pixel values."""
  rng = np.random.default_rng(seed)
  return data_lib.Split(
      images=rng.integers(0, 256, (num_examples,) + data_lib.IMAGE_SHAPE,
                          np.uint8),
      labels=rng.integers(0, 10, num_examples).astype(np.int32),
      index=np.arange(num_examples))


class StepTimer:
  """A config's jitted train step (train.make_train_fn), compiled once on
  random data, then timed for as many steps and rounds as asked."""

  def __init__(self, config: ml_collections.ConfigDict, num_batches: int = 4):
    config_lib.validate_config(config)
    self.config = config
    mesh = parallel.create_mesh()
    parallel.check_divisible(config.batch_size, mesh, 'config.batch_size')
    replicated = parallel.replicated(mesh)
    rows = np.arange(num_batches * config.batch_size).reshape(num_batches, -1)
    self._batches = batches_lib.device_train_batches(
        synthetic_split(rows.size), rows,
        parallel.stacked_batches_sharding(mesh))
    self._num_batches = num_batches
    self._state = train.create_state_for_config(
        config, 100, jax.random.PRNGKey(config.seed), replicated)
    self._totals = jax.device_put(train.zero_totals(), replicated)
    start = time.perf_counter()
    self._compiled = train.make_train_fn(config, mesh).lower(
        self._state, self._totals, self._batches, 0).compile()
    self.compile_seconds = time.perf_counter() - start
    self.flops_per_step = cost_flops(self._compiled, mesh.size)
    self.hlo_text = self._compiled.as_text  # the optimized HLO, as text
    self.run(1)

  def run(self, steps: int) -> Any:
    """Runs `steps` steps without waiting between them; returns the totals."""
    for i in range(steps):
      self._state, self._totals = self._compiled(
          self._state, self._totals, self._batches, i % self._num_batches)
    return self._totals

  def step_seconds(self, steps: int) -> list[float]:
    """Wall seconds of each of `steps` steps, each waited for."""
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      jax.block_until_ready(self.run(1))
      times.append(time.perf_counter() - start)
    return times


def step_figures(timer: StepTimer, step_seconds: float,
                 peak_flops: float) -> dict[str, float]:
  """Step time, throughput and FLOP utilisation from a (median) step time."""
  return {'step_ms': 1000 * step_seconds,
          'images_per_s': timer.config.batch_size / step_seconds,
          'flops_per_step': timer.flops_per_step,
          'matmul_peak_flops': peak_flops,
          'utilization': timer.flops_per_step / step_seconds / peak_flops,
          'compile_s': timer.compile_seconds}


def seconds_to_accuracy(records: list[dict[str, Any]],
                        accuracy: float) -> float | None:
  """Elapsed seconds at the end of the first epoch reaching `accuracy`."""
  for record in records:
    if record['test_accuracy'] >= accuracy:
      return record['elapsed']
  return None


def milestone_key(accuracy: float) -> str:
  return f'seconds_to_{100 * accuracy:.1f}'


def training_run(config: ml_collections.ConfigDict,
                 workdir: str | None = None) -> dict[str, Any]:
  """A fresh training run of `config` (in `workdir`, a new or empty folder,
  or in a temporary one): time to each accuracy milestone, compilation
  included, and the final epoch's test accuracy."""
  if workdir and os.path.isdir(workdir) and os.listdir(workdir):
    raise ValueError(f'workdir {workdir!r} is not empty; the benchmark times '
                     'a fresh training run, so give a new folder')
  with tempfile.TemporaryDirectory() as scratch:
    run_dir = workdir or scratch
    summary = train.train_and_evaluate(config, run_dir)
    records = metrics_log.read_metrics(run_dir)
  result = {milestone_key(a): seconds_to_accuracy(records, a)
            for a in ACCURACY_MILESTONES}
  result.update({
      'test_accuracy': summary['test_accuracy'],
      'test_examples': summary['test_examples'],
      'num_epochs': summary['epoch'], 'train_seconds': summary['elapsed'],
      'epochs': [{k: r[k] for k in ('epoch', 'test_accuracy', 'elapsed')}
                 for r in records]})
  if 'test_accuracy_tta' in summary:
    result['test_accuracy_tta'] = summary['test_accuracy_tta']
  return result


def _cpu_info() -> tuple[str, list[str]]:
  """The CPU's model name and its ISA_FLAGS, from /proc/cpuinfo (Linux)."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          model = value.strip()
        elif key.strip() in ('flags', 'Features'):
          flags.update(value.split())
  except OSError:
    pass
  return model, [flag for flag in ISA_FLAGS if flag in flags]


def machine_description() -> dict[str, Any]:
  """The hardware and software the figures were measured on."""
  device = jax.devices()[0]
  cpu_model, isa = _cpu_info()
  usable = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
            else os.cpu_count())
  return {'platform': device.platform, 'device_kind': device.device_kind,
          'device_count': jax.device_count(), 'cpu_model': cpu_model,
          'cpu_count': os.cpu_count(), 'usable_cpus': usable, 'cpu_isa': isa,
          'python': platform.python_version(), 'jax': jax.__version__,
          'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'step_compiler_options': dict(xla_cpu.STEP_COMPILER_OPTIONS),
          'project_dtype': 'float32'}


def benchmark_config(config: ml_collections.ConfigDict,
                     workdir: str | None = None, steps_only: bool = False,
                     profile_ops: int = 0, steps: int = 30) -> dict[str, Any]:
  """One config's figures: step time and FLOP utilisation (medians of
  `steps` steps), and unless `steps_only` a training run (WORKDIR/train).

  With `profile_ops`, also the step's costliest operations from a profiler
  trace kept in WORKDIR/profile (on CPU, call
  `op_profile.enable_cpu_op_events` before any computation).
  """
  timer = StepTimer(config)
  step = statistics.median(timer.step_seconds(steps))
  peak = matmul_peak_flops(parallel.create_mesh())
  result = {'model': config.model, 'batch_size': config.batch_size,
            **step_figures(timer, step, peak)}
  if profile_ops:
    result.update(op_profile.profile(
        timer.hlo_text(), lambda: timer.run(steps), steps,
        os.path.join(workdir, 'profile'), profile_ops))
  if not steps_only:
    result.update(training_run(config, workdir and os.path.join(workdir, 'train')))
  return result
