"""Speed benchmark: python scripts/benchmark.py --config=configs/fast.py --out=F.json

Prints and writes step_ms, images_per_s, flops_per_step (XLA cost analysis),
utilization (against a matmul peak measured in the same run), compile_s and,
from a real training run, seconds_to_99.0 / seconds_to_99.5 (compilation
included) and final_test_accuracy (and final_test_accuracy_tta with
--config.tta), the config file with its command-line overrides, and the
command. --steps_only skips the training run; --profile_ops=N adds the train
step's N costliest operations (`top_ops`, from a jax.profiler trace).

--suite benchmarks the project's targets instead of one config: fast.py
(time to 99.0%), default.py (time to 99.5%), best.py (accuracy within 15
minutes), cnn.py and wide.py (train step only: the Flax example's step time,
FLOP utilisation), one after the other, with each run's figures under `runs`
and a `targets` table (bound, measured, met). --config.KEY overrides apply to
every config (they are parsed against configs/fast.py, the --config default,
so a key must be in fast.py too); with --workdir, the training runs are kept
in WORKDIR/NAME.
"""

import json
import shlex
import sys

from absl import flags
from ml_collections import config_flags

from mnist_jax import benchmark
from mnist_jax import benchmark_suite
from mnist_jax import cli
from mnist_jax import flag_parsing
from mnist_jax import io_utils
from mnist_jax import op_profile
from mnist_jax import parallel
from mnist_jax.errors import UserError

_OUT = flags.DEFINE_string('out', None, 'JSON file to write the figures to.')
_STEPS_ONLY = flags.DEFINE_bool('steps_only', False, 'Time the train step only; '
                                'no training run.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Keep the training run here, '
                               'a new folder (default: a temporary one); with '
                               '--suite, each in WORKDIR/NAME.')
_SUITE = flags.DEFINE_bool('suite', False, 'Benchmark the project\'s targets: '
                           'fast, default and best.py with training runs, cnn '
                           'and wide.py steps only (about 16 minutes on 2 CPU '
                           'cores), and check each against its target.')
_PROFILE_OPS = flags.DEFINE_integer(
    'profile_ops', 0, 'Also list the N operations of the train step that take '
    'the most time (a jax.profiler trace of 30 steps; 0: off).', lower_bound=0)
flag_parsing.define_config_file('config', 'configs/fast.py', 'Config file.')


def _check_suite_flags():
  for name in ('config', 'steps_only', 'profile_ops'):
    if flags.FLAGS[name].present:
      raise UserError(f'--{name} does not go with --suite, which runs its own '
                      'configs (--config.KEY overrides apply to each)')


def _run_one():
  if _PROFILE_OPS.value:
    op_profile.enable_cpu_op_events()  # before the first computation
  result = benchmark.run_benchmark(flags.FLAGS.config, _WORKDIR.value,
                                   _STEPS_ONLY.value,
                                   profile_ops=_PROFILE_OPS.value)
  result['config'] = config_flags.get_config_filename(flags.FLAGS['config'])
  return result


def main(argv):
  del argv
  if _SUITE.value:
    _check_suite_flags()
  if _OUT.value:  # fail on an unwritable output before minutes of work
    io_utils.ensure_writable_file_path(_OUT.value, '--out')
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  if _SUITE.value:
    result = benchmark_suite.run_suite(benchmark_suite.SUITE, overrides,
                                       _WORKDIR.value)
  else:
    result = _run_one()
  result['config_overrides'] = overrides
  result['command'] = shlex.join(['python'] + sys.argv)
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value and parallel.is_main_process():
    io_utils.write_text(_OUT.value, text + '\n')


if __name__ == '__main__':
  cli.run(main)
