"""The project's speed targets as one benchmark: a run per config, each
checked against the target it is there for.

`run_suite` benchmarks every run of a suite in this process, one after the
other, and returns their figures with a `targets` table: each target's
bound, the measured figure and whether it was met. The targets were set for
a 2-core CPU; on a faster machine they are easier, and the table says so.
"""

import importlib
import os
from typing import Any, NamedTuple

import ml_collections
from ml_collections.config_flags import config_path

from mnist_jax import benchmark
from mnist_jax import flag_parsing
from mnist_jax.errors import UserError


class Target(NamedTuple):
  """A bound on one figure of a run's benchmark result."""
  figure: str
  bound: float
  at_most: bool  # True: met when figure <= bound; False: when >= bound

  def describe(self) -> str:
    return f"{self.figure} {'<=' if self.at_most else '>='} {self.bound:g}"

  def is_met(self, value: float | None) -> bool:
    if value is None:  # e.g. an accuracy milestone never reached
      return False
    return value <= self.bound if self.at_most else value >= self.bound


class SuiteRun(NamedTuple):
  """One config of the suite: its name in the result, the config module
  (`configs.NAME`, whose `get_config()` gives the config), whether it trains
  or only times the train step, and the targets it is there for."""
  name: str
  config_module: str
  steps_only: bool
  targets: tuple[Target, ...]


# The performance targets (README, Performance): 99.0% with fast.py within
# 15 s and 99.5% within 2 minutes, compilation included; the best model at
# 99.65% or more within 15 minutes of training; the Flax example's CNN step
# at batch 128 within PyTorch's 58 ms; a train step at half the matmul peak.
SUITE = (
    SuiteRun('fast', 'configs.fast', False, (Target('seconds_to_99.0', 15, True),)),
    SuiteRun('default', 'configs.default', False,
             (Target('seconds_to_99.5', 120, True),)),
    SuiteRun('best', 'configs.best', False,
             (Target('final_test_accuracy_tta', 0.9965, False),
              Target('train_seconds', 900, True))),
    SuiteRun('cnn', 'configs.cnn', True, (Target('step_ms', 58, True),)),
    SuiteRun('wide', 'configs.wide', True, (Target('utilization', 0.5, False),)),
)


def config_file(run: SuiteRun) -> str:
  """The run's config as the path given to `--config`."""
  return run.config_module.replace('.', '/') + '.py'


def load_config(run: SuiteRun,
                overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """The run's config with `overrides` (flattened `--config.KEY` values)
  applied; a key the config does not have is a UserError."""
  config = importlib.import_module(run.config_module).get_config()
  for key, value in overrides.items():
    if not flag_parsing.has_key(config, key):
      raise UserError(f'--config.{key}: {config_file(run)} has no such key')
    try:
      config_path.set_value(key, config, value)
    except TypeError as e:  # ml_collections' type check
      raise UserError(f'--config.{key}: {value!r} does not fit '
                      f'{config_file(run)} ({e})') from None
  return config


def run_workdir(workdir: str | None, run: SuiteRun) -> str | None:
  """Where a run that trains keeps its training run: WORKDIR/NAME."""
  if workdir is None or run.steps_only:
    return None
  return os.path.join(workdir, run.name)


def check_targets(suite: tuple[SuiteRun, ...],
                  runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
  """A row per target: the run, its config, the target, the measured value
  and whether it was met."""
  rows = []
  for run in suite:
    for target in run.targets:
      measured = runs[run.name].get(target.figure)
      rows.append({'run': run.name, 'config': config_file(run),
                   'target': target.describe(), 'measured': measured,
                   'met': target.is_met(measured)})
  return rows


def run_suite(suite: tuple[SuiteRun, ...], overrides: dict[str, Any],
              workdir: str | None = None) -> dict[str, Any]:
  """Benchmarks each run of `suite` in turn (see `benchmark.run_benchmark`).

  Every config is loaded and checked, and every training run's folder under
  `workdir` found fresh and writable, before the first run starts.
  """
  configs = {}
  for run in suite:
    configs[run.name] = load_config(run, overrides)
    try:
      benchmark.check_config_and_workdir(configs[run.name],
                                         run_workdir(workdir, run), run.steps_only)
    except UserError as e:
      raise UserError(f'{config_file(run)}: {e}') from None
  runs = {}
  for run in suite:
    result = benchmark.run_benchmark(configs[run.name], run_workdir(workdir, run),
                                     run.steps_only)
    del result['machine']  # the same for every run; once, at the top
    runs[run.name] = {'config': config_file(run), **result}
  targets = check_targets(suite, runs)
  return {'machine': benchmark.machine_description(), 'targets': targets,
          'all_met': all(row['met'] for row in targets), 'runs': runs}
