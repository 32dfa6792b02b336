"""Speed benchmark: python scripts/benchmark.py --config=configs/fast.py --out=F.json

Prints and writes step_ms, images_per_s, flops_per_step (XLA cost analysis),
utilization (against a matmul peak measured in the same run), compile_s and,
from a real training run, seconds_to_99.0 / seconds_to_99.5 (compilation
included) and final_test_accuracy (and final_test_accuracy_tta with
--config.tta), and the config file with its command-line overrides.
--steps_only skips the training run; --profile_ops=N adds the train step's N
costliest operations (`top_ops`, from a jax.profiler trace).
"""

import json

from absl import flags
from ml_collections import config_flags

from mnist_jax import benchmark
from mnist_jax import cli
from mnist_jax import flag_parsing
from mnist_jax import io_utils
from mnist_jax import op_profile
from mnist_jax import parallel

_OUT = flags.DEFINE_string('out', None, 'JSON file to write the figures to.')
_STEPS_ONLY = flags.DEFINE_bool('steps_only', False, 'Time the train step only; '
                                'no training run.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Keep the training run here, '
                               'a new folder (default: a temporary one).')
_PROFILE_OPS = flags.DEFINE_integer(
    'profile_ops', 0, 'Also list the N operations of the train step that take '
    'the most time (a jax.profiler trace of 30 steps; 0: off).', lower_bound=0)
flag_parsing.define_config_file('config', 'configs/fast.py', 'Config file.')


def main(argv):
  del argv
  if _OUT.value:  # fail on an unwritable output before minutes of work
    io_utils.ensure_writable_file_path(_OUT.value, '--out')
  if _PROFILE_OPS.value:
    op_profile.enable_cpu_op_events()  # before the first computation
  result = benchmark.run_benchmark(flags.FLAGS.config, _WORKDIR.value,
                                   _STEPS_ONLY.value,
                                   profile_ops=_PROFILE_OPS.value)
  # The config file and the --config.KEY values given on the command line.
  result['config'] = config_flags.get_config_filename(flags.FLAGS['config'])
  result['config_overrides'] = config_flags.get_override_values(
      flags.FLAGS['config'])
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value and parallel.is_main_process():
    io_utils.write_text(_OUT.value, text + '\n')


if __name__ == '__main__':
  cli.run(main)
