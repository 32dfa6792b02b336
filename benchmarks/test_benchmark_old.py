"""The benchmark's figures: present, positive and consistent."""

import json

import jax
import jax.numpy as jnp
import pytest

from mnist_jax import benchmark
from mnist_jax import benchmark_suite
from mnist_jax import op_profile

from conftest import run_script, tiny_config


def test_seconds_to_accuracy():
  records = [{'test_accuracy': 0.98, 'elapsed': 5.0},
             {'test_accuracy': 0.991, 'elapsed': 9.0},
             {'test_accuracy': 0.996, 'elapsed': 14.0}]
  assert benchmark.seconds_to_accuracy(records, 0.99) == 9.0
  assert benchmark.seconds_to_accuracy(records, 0.995) == 14.0
  assert benchmark.seconds_to_accuracy(records, 0.999) is None


def test_step_figures(tiny_idx_dir):
  figures = benchmark.time_train_step(tiny_config(tiny_idx_dir), steps=3)
  # The tiny network's multiply-adds per image: conv 1->8 at 28x28, conv
  # 8->16 at 14x14, dense 784->32 and 32->10. A step is two FLOPs per
  # multiply-add, forward plus two gradients (the first convolution needs no
  # input gradient), for 64 images. XLA leaves out the padding's products
  # and adds the elementwise work, so allow 0.8-1.5 of that.
  first_conv = 28 * 28 * 9 * 1 * 8
  rest = 14 * 14 * 9 * 8 * 16 + 7 * 7 * 16 * 32 + 32 * 10
  expected = 2 * 64 * (2 * first_conv + 3 * rest)
  assert 0.8 * expected < figures['flops_per_step'] < 1.5 * expected


def test_flops_count_every_device(tmp_path, tiny_idx_dir):
  """On two devices each runs half the batch: XLA's cost analysis counts one
  device's share, the figures must count the whole step on both."""
  config_flags = ('--config=configs/default.py', f'--config.data_dir={tiny_idx_dir}',
                  '--config.model_kwargs.widths=(8,16)', '--config.batch_size=64',
                  '--steps_only')
  figures = {}
  for devices in (1, 2):
    out = tmp_path / f'{devices}.json'
    result = run_script('benchmark.py', *config_flags, f'--out={out}', env={
        'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'})
    assert result.returncode == 0, result.stderr
    figures[devices] = json.loads(out.read_text())
    assert figures[devices]['machine']['device_count'] == devices
  assert figures[2]['flops_per_step'] == pytest.approx(figures[1]['flops_per_step'],
                                                       rel=0.02)


def test_script_with_training_run(tmp_path, tiny_idx_dir):
  out = tmp_path / 'bench.json'
  result = run_script('benchmark.py', f'--config.data_dir={tiny_idx_dir}',
                      '--config.model_kwargs.widths=(8,16)', '--config.num_epochs=2',
                      '--config.batch_size=64', '--config.eval_batch_size=100',
                      '--profile_ops=8', f'--out={out}')
  assert result.returncode == 0, result.stderr
  figures = json.loads(out.read_text())
  for key in ('step_ms', 'images_per_s', 'flops_per_step', 'utilization',
              'compile_s', 'matmul_peak_flops', 'seconds_to_99.0', 'seconds_to_99.5'):
    assert key in figures, key
  assert 0 < figures['utilization'] < 1
  assert [e['epoch'] for e in figures['epochs']] == [1, 2]
  assert figures['test_examples'] == 200
  assert figures['config'] == 'configs/fast.py'
  assert figures['config_overrides'] == {
      'data_dir': str(tiny_idx_dir), 'model_kwargs.widths': [8, 16],
      'num_epochs': 2, 'batch_size': 64, 'eval_batch_size': 100}
  assert figures['command'].startswith('python ')
  assert figures['command'].endswith(f'--profile_ops=8 --out={out}')
  top_ops = figures['top_ops']
  assert len(top_ops) == 8
  assert all(op['ms'] > 0 and 0 < op['share'] <= 1 for op in top_ops)
  assert [op['ms'] for op in top_ops] == sorted((op['ms'] for op in top_ops),
                                               reverse=True)
  assert any('Conv' in op['op'] for op in top_ops), top_ops


def test_script_refuses_a_workdir_with_a_run(tmp_path, tiny_idx_dir):
  """Time to accuracy needs a fresh run: a resumed one would start part-way."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'metrics.jsonl').write_text('{"epoch": 1, "elapsed": 3.0}\n')
  out = tmp_path / 'bench.json'
  result = run_script('benchmark.py', f'--config.data_dir={tiny_idx_dir}',
                      f'--workdir={workdir}', f'--out={out}')
  assert result.returncode == 2, result.stderr
  assert f"error: --workdir '{workdir}' is not empty" in result.stderr
  assert not out.exists()


def test_instruction_ops_name_the_jax_operations():
  compiled = jax.jit(lambda x: jnp.sin(x) @ x).lower(jnp.ones((8, 8))).compile()
  ops = op_profile.instruction_ops(compiled.as_text())
  assert any(op.endswith('sin') for op in ops.values()), ops
  assert any(op.endswith('dot_general') for op in ops.values()), ops
  assert not any(op.startswith('jit(') for op in ops.values())


def test_targets():
  at_most = benchmark_suite.Target('step_ms', 58, at_most=True)
  at_least = benchmark_suite.Target('utilization', 0.5, at_most=False)
  assert at_most.describe() == 'step_ms <= 58'
  assert at_least.describe() == 'utilization >= 0.5'
  assert at_most.is_met(58) and not at_most.is_met(58.1)
  assert at_least.is_met(0.5) and not at_least.is_met(0.49)
  assert not at_most.is_met(None)  # a milestone never reached


def test_check_targets_reads_each_runs_own_figures():
  suite = (benchmark_suite.SuiteRun('a', 'configs.fast', False, (
               benchmark_suite.Target('seconds_to_99.0', 15, True),
               benchmark_suite.Target('final_test_accuracy', 0.99, False))),
           benchmark_suite.SuiteRun('b', 'configs.cnn', True, (
               benchmark_suite.Target('step_ms', 58, True),)))
  runs = {'a': {'seconds_to_99.0': None, 'final_test_accuracy': 0.995, 'step_ms': 99},
          'b': {'step_ms': 40.0}}
  rows = benchmark_suite.check_targets(suite, runs)
  assert rows == [
      {'run': 'a', 'config': 'configs/fast.py', 'target': 'seconds_to_99.0 <= 15',
       'measured': None, 'met': False},
      {'run': 'a', 'config': 'configs/fast.py', 'target': 'final_test_accuracy >= 0.99',
       'measured': 0.995, 'met': True},
      {'run': 'b', 'config': 'configs/cnn.py', 'target': 'step_ms <= 58',
       'measured': 40.0, 'met': True}]


def test_suite_runs_every_config_and_checks_its_targets(tmp_path, tiny_idx_dir):
  """The real suite (fast, default and best.py trained for one epoch on tiny
  data, cnn and wide.py steps only): every run's figures, one row per target
  holding that run's figure, and the training runs kept under WORKDIR/NAME."""
  out, workdir = tmp_path / 'suite.json', tmp_path / 'runs'
  result = run_script('benchmark.py', '--suite', f'--config.data_dir={tiny_idx_dir}',
                      '--config.num_epochs=1', f'--workdir={workdir}', f'--out={out}')
  assert result.returncode == 0, result.stderr
  figures = json.loads(out.read_text())
  suite = benchmark_suite.SUITE
  assert list(figures['runs']) == [run.name for run in suite]
  for run in suite:
    figures_of_run = figures['runs'][run.name]
    assert figures_of_run['config'] == f'configs/{run.name}.py'
    assert 0 < figures_of_run['utilization'] < 1
    assert ('epochs' in figures_of_run) == (not run.steps_only), run.name
    assert (workdir / run.name / 'metrics.jsonl').exists() == (not run.steps_only)
  assert figures['runs']['best']['num_epochs'] == 1
  assert 'final_test_accuracy_tta' in figures['runs']['best']  # best.py's views
  targets = [(run, target) for run in suite for target in run.targets]
  assert len(figures['targets']) == len(targets)
  for row, (run, target) in zip(figures['targets'], targets):
    measured = figures['runs'][run.name].get(target.figure)
    assert row == {'run': run.name, 'config': f'configs/{run.name}.py',
                   'target': target.describe(), 'measured': measured,
                   'met': target.is_met(measured)}
  # One epoch on 200 synthetic test images cannot reach 99.65%.
  assert not figures['all_met']
  assert figures['config_overrides'] == {'data_dir': str(tiny_idx_dir), 'num_epochs': 1}
  assert figures['command'].startswith('python ') and '--suite' in figures['command']


@pytest.mark.parametrize('flag, message', [
    ('--config=configs/best.py', '--config does not go with --suite'),
    ('--steps_only', '--steps_only does not go with --suite'),
    ('--profile_ops=4', '--profile_ops does not go with --suite'),
    ('--config.model_kwargs.convs_per_stage=2',  # an int where best.py has a tuple
     '--config.model_kwargs.convs_per_stage: 2 does not fit configs/best.py'),
    ('--config.batch_size=0', 'configs/fast.py: --config.batch_size: must be a '
     'positive integer'),
    ('--config.model_kwargs.widths=(8,16)',
     '--config.model_kwargs.widths: configs/cnn.py has no such key'),
])
def test_suite_refuses_flags_for_one_config(tmp_path, tiny_idx_dir, flag, message):
  out = tmp_path / 'suite.json'
  # ml_collections wants --config before any --config.KEY.
  result = run_script('benchmark.py', '--suite', flag,
                      f'--config.data_dir={tiny_idx_dir}', f'--out={out}')
  assert result.returncode == 2, result.stderr
  assert f'error: {message}' in result.stderr
  assert not out.exists()


def test_suite_checks_every_workdir_before_the_first_run(tmp_path, tiny_idx_dir):
  """best.py trains third: its kept run is found before fast.py starts."""
  workdir = tmp_path / 'runs'
  (workdir / 'best').mkdir(parents=True)
  (workdir / 'best' / 'metrics.jsonl').write_text('{"epoch": 1, "elapsed": 3.0}\n')
  out = tmp_path / 'suite.json'
  result = run_script('benchmark.py', '--suite', f'--config.data_dir={tiny_idx_dir}',
                      f'--workdir={workdir}', f'--out={out}')
  assert result.returncode == 2, result.stderr
  assert f"error: configs/best.py: --workdir '{workdir / 'best'}' is not empty" in result.stderr
  assert list((workdir / 'fast').iterdir()) == []  # made by the check, not run in
  assert not out.exists()


def test_suite_refuses_a_workdir_that_is_a_file(tmp_path, tiny_idx_dir):
  workdir = tmp_path / 'runs'
  workdir.write_text('not a folder')
  out = tmp_path / 'suite.json'
  result = run_script('benchmark.py', '--suite', f'--config.data_dir={tiny_idx_dir}',
                      f'--workdir={workdir}', f'--out={out}')
  assert result.returncode == 2, result.stderr
  assert (f"error: configs/fast.py: --workdir '{workdir / 'fast'}' is not a "
          'writable directory') in result.stderr
  assert not out.exists()
