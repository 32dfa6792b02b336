"""Speed benchmarks: the project against PyTorch peers on the same machine.

    python benchmarks/benchmark.py --suite --config.data_dir=DIR --out=F.json

--suite runs project and peers in turns, --rounds times, and prints and
writes their figures, spreads and ratios with a targets table (suite.py):
time to 99.0% of configs/fast.py against the peer recipe, the Flax-example
CNN's step (configs/cnn.py) against PyTorch's, the FLOP utilisation of
configs/best.py's step. --accuracy adds configs/best.py's full training run
with seeds 0, 1 and 2 (13 to about 35 minutes each on the 2-core machines
measured so far). --config.KEY
overrides apply to every config of the suite. The peers need PyTorch
(`make setup-benchmark`).

Without --suite, one config (--config, default configs/fast.py): step time,
FLOP utilisation and, unless --steps_only, a training run's time to 99.0%
and 99.5%; --profile_ops=N adds the step's N costliest operations and keeps
the profiler trace in --workdir for TensorBoard's profile plugin.
"""

import importlib.util
import json
import os
import shlex
import sys

from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

import op_profile
import suite
import timing
from mnist_jax import cli
from mnist_jax import io_utils
from mnist_jax import parallel

ACCURACY_SEEDS = (0, 1, 2)
SUITE_CONFIGS = {'fast': 'fast.py', 'cnn': 'cnn.py', 'best': 'best.py'}

_OUT = flags.DEFINE_string('out', None, 'JSON file to write the figures to.')
_SUITE = flags.DEFINE_bool('suite', False, 'Run the suite of targets against '
                           'the PyTorch peers (about 5 minutes on 2 CPU cores).')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'With --suite: rounds of project '
                               'and peer runs, in turns.', lower_bound=1)
_ACCURACY = flags.DEFINE_bool('accuracy', False, 'With --suite: also train '
                              'configs/best.py with seeds 0, 1 and 2 and check '
                              'its mean final test accuracy (40-105 minutes '
                              'more on 2 CPU cores).')
_STEPS_ONLY = flags.DEFINE_bool('steps_only', False, 'Without --suite: time '
                                'the train step only; no training run.')
_PROFILE_OPS = flags.DEFINE_integer(
    'profile_ops', 0, 'Without --suite: also list the N operations of the '
    'train step that take the most time, from a jax.profiler trace of 30 '
    'steps kept in --workdir (0: off).', lower_bound=0)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Keep the training runs (and '
                               'the profiler trace) here, a new folder; '
                               'default: a temporary one.')
_CONFIG = cli.define_config_flag('fast.py')


def _load_config(name: str, overrides: dict):
  """configs/NAME with the command line's --config.KEY overrides."""
  path = os.path.join(cli.CONFIGS_DIR, name)
  spec = importlib.util.spec_from_file_location(f'configs_{name[:-3]}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    try:
      config_path.get_value(key, config)
    except (KeyError, AttributeError):
      raise ValueError(f'config.{key}: configs/{name} has no such key') from None
    config_path.set_value(key, config, value)
  return config


def _check_flags() -> None:
  if _SUITE.value:
    for name in ('config', 'steps_only', 'profile_ops'):
      if flags.FLAGS[name].present:
        raise ValueError(f'--{name} does not go with --suite, which runs its '
                         'own configs (--config.KEY overrides apply to each)')
    if not suite.torch_available():
      cli.fail('the suite\'s peers need PyTorch, which is not installed: run '
               '`make setup-benchmark` (pip install -r requirements-benchmark.txt)')
  else:
    for name in ('rounds', 'accuracy'):
      if flags.FLAGS[name].present:
        raise ValueError(f'--{name} goes with --suite only')
  if _PROFILE_OPS.value and not _WORKDIR.value:
    raise ValueError('--profile_ops keeps its trace in --workdir; give one')
  if _WORKDIR.value and os.path.isdir(_WORKDIR.value) and os.listdir(_WORKDIR.value):
    raise ValueError(f'workdir {_WORKDIR.value!r} is not empty; the benchmark '
                     'times fresh training runs, so give a new folder')


def main(argv):
  del argv
  _check_flags()
  if _OUT.value:  # fail on an unwritable output before minutes of work
    io_utils.ensure_writable_file_path(_OUT.value, 'out')
  if _PROFILE_OPS.value:
    op_profile.enable_cpu_op_events()  # before the first computation
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  if _SUITE.value:
    configs = {key: _load_config(name, overrides)
               for key, name in SUITE_CONFIGS.items()}
    result = suite.run_suite(configs, _ROUNDS.value, _WORKDIR.value,
                             accuracy_seeds=ACCURACY_SEEDS if _ACCURACY.value else ())
  else:
    result = timing.benchmark_config(_CONFIG.value, _WORKDIR.value,
                                     _STEPS_ONLY.value, _PROFILE_OPS.value)
    result['config'] = config_flags.get_config_filename(flags.FLAGS['config'])
  result['machine'] = {**timing.machine_description(), **result.get('machine', {})}
  result['config_overrides'] = overrides
  result['command'] = shlex.join(['python'] + sys.argv)
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value and parallel.is_main_process():
    io_utils.write_text(_OUT.value, text + '\n')


if __name__ == '__main__':
  cli.run(main)
