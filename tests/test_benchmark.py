"""The benchmark's figures: present, positive and consistent."""

import json

import jax
import jax.numpy as jnp
import pytest

from mnist_jax import benchmark
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
  assert figures['step_ms'] > 0 and figures['compile_s'] > 0
  assert figures['images_per_s'] == pytest.approx(64 / (figures['step_ms'] / 1000))
  # conv 8 + conv 16 + dense layers: a forward and backward pass of 64 images
  # is at least a few MFLOP, and certainly under a TFLOP.
  assert 1e6 < figures['flops_per_step'] < 1e12


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
  top_ops = figures['top_ops']
  assert len(top_ops) == 8
  assert all(op['ms'] > 0 and 0 < op['share'] <= 1 for op in top_ops)
  assert [op['ms'] for op in top_ops] == sorted((op['ms'] for op in top_ops),
                                               reverse=True)
  assert any('Conv' in op['op'] for op in top_ops), top_ops


def test_instruction_ops_name_the_jax_operations():
  compiled = jax.jit(lambda x: jnp.sin(x) @ x).lower(jnp.ones((8, 8))).compile()
  ops = op_profile.instruction_ops(compiled.as_text())
  assert any(op.endswith('sin') for op in ops.values()), ops
  assert any(op.endswith('dot_general') for op in ops.values()), ops
  assert not any(op.startswith('jit(') for op in ops.values())
