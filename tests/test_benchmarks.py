"""The benchmarks (benchmarks/): the suite's statistics, rounds and targets,
the project's step figures, the profiler's trace, and the PyTorch peers on
tiny inputs (skipped where torch is not installed: only
requirements-benchmark.txt brings it). No test here asserts a time."""

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import op_profile
import suite
import timing
from mnist_jax import models

from conftest import REPO_ROOT, synthetic_digits, tiny_config, write_idx_folder

needs_torch = pytest.mark.skipif(not suite.torch_available(),
                                 reason='PyTorch not installed (make setup-benchmark)')
# Importing torch alone takes seconds.


# ------------------------------------------------------------- statistics


def test_summarize_median_extremes_and_spread():
  assert suite.summarize([3.0, 1.0, 2.0]) == {
      'median': 2.0, 'min': 1.0, 'max': 3.0, 'spread': 1.0,
      'samples': [3.0, 1.0, 2.0]}
  assert suite.summarize([4.0, 1.0, 2.0, 3.0])['median'] == 2.5


def test_summarize_counts_a_missed_accuracy_as_slowest():
  figures = suite.summarize([5.0, None, 3.0])
  assert figures['median'] == 5.0 and figures['min'] == 3.0
  assert figures['max'] is None and figures['spread'] is None
  assert suite.summarize([None, 2.0, None])['median'] is None


def test_ratio_of_medians_and_per_round():
  figures = suite.ratio([2.0, 6.0, 4.0], [1.0, 2.0, 2.0])
  assert figures['median'] == pytest.approx(4.0 / 2.0)
  assert figures['rounds'] == [2.0, 3.0, 2.0]
  assert (figures['min'], figures['max']) == (2.0, 3.0)
  missed = suite.ratio([None, 3.0], [2.0, 2.0])
  assert missed['rounds'] == [None, 1.5] and missed['median'] is None


def test_interleave_alternates_who_goes_first():
  calls = []
  project, peer = suite.interleave(
      3, lambda r: calls.append(('project', r)) or 10 * r,
      lambda r: calls.append(('peer', r)) or -r)
  assert calls == [('project', 0), ('peer', 0), ('peer', 1), ('project', 1),
                   ('project', 2), ('peer', 2)]
  assert (project, peer) == ([0, 10, 20], [0, -1, -2])


def _result(time_ratio, step_ratio, utilization):
  return {'time_to_accuracy': {'ratio': {'median': time_ratio}},
          'train_step': {'ratio': {'median': step_ratio}},
          'utilization': {'utilization': {'median': utilization}}}


def test_targets_table_bounds_goals_and_aims():
  rows = suite.targets_table(_result(0.8, 1.02, 0.45), suite.SPEED_TARGETS)
  assert [(row['measured'], row['met']) for row in rows] == [
      (0.8, True), (1.02, False), (0.45, False)]
  assert rows[0]['goal'] == '<= 0.7' and rows[0]['goal_met'] is False
  assert [row['required'] for row in rows] == [True, True, False]
  assert not suite.all_met(rows)
  # The utilisation is an aim: missing it alone leaves all_met true.
  assert suite.all_met(suite.targets_table(_result(0.6, 0.9, 0.45),
                                           suite.SPEED_TARGETS))


def test_targets_table_missing_figure_is_not_met():
  rows = suite.targets_table(_result(None, 0.9, 0.7), suite.SPEED_TARGETS)
  assert rows[0]['measured'] is None and not rows[0]['met']
  rows = suite.targets_table({}, [suite.ACCURACY_TARGET])
  assert rows[0]['measured'] is None and not rows[0]['met']


def test_suite_result_holds_every_phase_and_its_targets(monkeypatch, tmp_path):
  """run_suite's JSON (phases faked): figures, targets, the optional
  accuracy phase fed the peer's median time, and nothing JSON cannot hold."""
  monkeypatch.setattr(suite, 'warm_up', lambda: None)
  monkeypatch.setattr(suite, 'time_to_accuracy', lambda *a: {
      'ratio': suite.ratio([6.0, 7.0], [10.0, 10.0]),
      'peer': {'seconds': suite.summarize([10.0, 10.0])}})
  monkeypatch.setattr(suite, 'train_step', lambda *a: {
      'ratio': suite.ratio([40.0, 50.0], [50.0, 50.0])})
  monkeypatch.setattr(suite, 'utilization', lambda *a: {
      'utilization': suite.summarize([0.5, 0.7])})
  seen = {}

  def accuracy(config, seeds, scratch, peer_seconds):
    seen.update(seeds=seeds, peer_seconds=peer_seconds, scratch=scratch)
    return {'mean_test_accuracy': 0.9968}

  monkeypatch.setattr(suite, 'accuracy', accuracy)
  configs = {'fast': None, 'cnn': None, 'best': None}
  result = suite.run_suite(configs, 2, str(tmp_path / 'w'),
                           accuracy_seeds=(0, 1, 2))
  assert seen == {'seeds': (0, 1, 2), 'peer_seconds': 10.0,
                  'scratch': str(tmp_path / 'w')}
  assert [row['measured'] for row in result['targets']] == [
      pytest.approx(0.65), pytest.approx(0.9), pytest.approx(0.6), 0.9968]
  assert [row['met'] for row in result['targets']] == [True, True, True, False]
  assert result['all_met'] is False and result['rounds'] == 2
  json.dumps(result, allow_nan=False)
  without = suite.run_suite(configs, 1)
  assert 'accuracy' not in without and without['all_met'] is True
  with pytest.raises(ValueError, match='rounds=0'):
    suite.run_suite(configs, 0)


# ----------------------------------------------------- the project's side


def test_seconds_to_accuracy():
  records = [{'test_accuracy': 0.98, 'elapsed': 5.0},
             {'test_accuracy': 0.991, 'elapsed': 9.0},
             {'test_accuracy': 0.996, 'elapsed': 14.0}]
  assert timing.seconds_to_accuracy(records, 0.99) == 9.0
  assert timing.seconds_to_accuracy(records, 0.995) == 14.0
  assert timing.seconds_to_accuracy(records, 0.999) is None


@pytest.mark.slow  # compiles a train step
def test_step_figures_count_the_step(tiny_idx_dir):
  timer = timing.StepTimer(tiny_config(tiny_idx_dir))
  times = timer.step_seconds(3)
  assert len(times) == 3 and all(t > 0 for t in times)
  # The tiny network's multiply-adds per image: conv 1->8 at 28x28, conv
  # 8->16 at 14x14, dense 784->32 and 32->10. A step is two FLOPs per
  # multiply-add, forward plus two gradients (the first convolution needs no
  # input gradient), for 64 images. XLA leaves out the padding's products
  # and adds the elementwise work, so allow 0.8-1.5 of that.
  first_conv = 28 * 28 * 9 * 1 * 8
  rest = 14 * 14 * 9 * 8 * 16 + 7 * 7 * 16 * 32 + 32 * 10
  expected = 2 * 64 * (2 * first_conv + 3 * rest)
  assert 0.8 * expected < timer.flops_per_step < 1.5 * expected
  figures = timing.step_figures(timer, 0.002, 1e11)
  assert figures['step_ms'] == pytest.approx(2.0)
  assert figures['images_per_s'] == pytest.approx(32000)
  assert figures['utilization'] == pytest.approx(timer.flops_per_step / 2e8)


def test_machine_description_names_cpu_and_versions():
  machine = timing.machine_description()
  assert machine['jax'] == jax.__version__ and machine['cpu_count'] >= 1
  assert set(machine['cpu_isa']) <= set(timing.ISA_FLAGS)
  assert machine['cpu_model'] and machine['project_dtype'] == 'float32'


def test_profile_keeps_its_trace_for_tensorboard(tmp_path):
  fn = jax.jit(lambda x: jnp.sin(x) @ x)
  x = jnp.ones((64, 64))
  compiled = fn.lower(x).compile()
  result = op_profile.profile(compiled.as_text(), lambda: compiled(x), 1,
                              str(tmp_path / 'profile'))
  assert result['trace'].startswith(str(tmp_path / 'profile'))
  # TensorBoard's profile plugin reads the .xplane.pb beside the trace.
  assert glob.glob(os.path.join(result['trace'], '*.xplane.pb'))
  assert isinstance(result['top_ops'], list)


_PROFILE_IN_A_FRESH_PROCESS = '''
import json, sys
import op_profile
op_profile.enable_cpu_op_events()  # before the first computation
import jax, jax.numpy as jnp
fn = jax.jit(lambda x: jnp.sin(x) @ x)
x = jnp.ones((256, 256))
compiled = fn.lower(x).compile()
result = op_profile.profile(compiled.as_text(), lambda: [compiled(x) for _ in range(3)][-1],
                            3, sys.argv[1])
print(json.dumps(result['top_ops']))
'''


@pytest.mark.slow  # a fresh interpreter imports jax
def test_profile_lists_the_ops_with_cpu_op_events(tmp_path):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.join(REPO_ROOT, 'benchmarks'), REPO_ROOT]))
  process = subprocess.run(
      [sys.executable, '-c', _PROFILE_IN_A_FRESH_PROCESS, str(tmp_path)],
      capture_output=True, text=True, env=env, timeout=300, check=True)
  top_ops = json.loads(process.stdout.strip().splitlines()[-1])
  assert top_ops, 'no per-op events in the trace'
  ops = ' '.join(row['op'] for row in top_ops)
  assert 'dot_general' in ops or 'sin' in ops, top_ops
  assert all(row['ms'] >= 0 and 0 <= row['share'] <= 1 for row in top_ops)
  assert sum(row['share'] for row in top_ops) == pytest.approx(1, abs=0.01)


def test_instruction_ops_name_fusions_without_metadata():
  hlo = '\n'.join([
      '%fused_computation.1 (p: f32[4,8]) -> f32[3,3] {',
      '  %p = f32[4,8]{1,0} parameter(0)',
      '  ROOT %convolution.3 = f32[3,3]{1,0} convolution(%p, %p), window={size=2}',
      '}', '',
      'ENTRY %main (a: f32[4,8]) -> f32[3,3] {',
      '  %a = f32[4,8]{1,0} parameter(0)',
      '  %sine.1 = f32[4,8]{1,0} sine(%a), metadata={op_name="jit(f)/sin"}',
      '  ROOT %ynn_fusion.1 = f32[3,3]{1,0} fusion(%sine.1), kind=kCustom, '
      'calls=%fused_computation.1',
      '}'])
  ops = op_profile.instruction_ops(hlo)
  assert ops['sine.1'] == 'sin'
  assert ops['ynn_fusion.1'] == 'convolution f32[3,3]'


# ------------------------------------------------------------------ peers


def _digits(num_examples, seed):
  images, labels = synthetic_digits(num_examples, seed)
  return images[..., None], labels.astype(np.int32)


@needs_torch
@pytest.mark.slow
def test_peer_networks_match_the_projects():
  import peers.torch_cnn_step as cnn_step  # pylint: disable=g-import-not-at-top
  import peers.torch_fast_mnist as fast_mnist  # pylint: disable=g-import-not-at-top
  variables = models.CNN().init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
  project = {'/'.join(k.key for k in path): leaf.size for path, leaf
             in jax.tree_util.tree_leaves_with_path(variables['params'])}
  torch_sizes = sorted(p.numel() for p in cnn_step.FlaxExampleCNN().parameters())
  assert torch_sizes == sorted(project.values())
  # The recipe: conv 1->24 5x5, conv 24->32 3x3, 800->256->10.
  assert sum(p.numel() for p in fast_mnist.Net().parameters()) == (
      24 * 25 + 24 + 32 * 24 * 9 + 32 + 800 * 256 + 256 + 2570)


@needs_torch
@pytest.mark.slow
def test_peer_recipe_trains_and_counts_every_test_image():
  import peers.torch_fast_mnist as fast_mnist  # pylint: disable=g-import-not-at-top
  train_images, train_labels = _digits(600, 0)
  test_images, test_labels = _digits(250, 1)
  result = fast_mnist.train(train_images, train_labels, test_images,
                            test_labels, epochs=2, max_steps=2)
  assert [r['epoch'] for r in result['epochs']] == [1, 2]
  assert result['test_examples'] == 250
  assert result['test_accuracy'] == result['epochs'][-1]['test_accuracy']
  assert 0 <= result['test_accuracy'] <= 1
  assert result['epochs'][0]['elapsed'] <= result['seconds']
  again = fast_mnist.train(train_images, train_labels, test_images,
                           test_labels, epochs=2, max_steps=2)
  assert again['test_accuracy'] == result['test_accuracy']  # seeded


@needs_torch
@pytest.mark.slow
def test_peer_step_times_each_step():
  import peers.torch_cnn_step as cnn_step  # pylint: disable=g-import-not-at-top
  times = cnn_step.step_seconds(steps=3, warmup=1, batch_size=8)
  assert len(times) == 3 and all(t > 0 for t in times)


@needs_torch
@pytest.mark.slow
def test_run_peer_returns_its_json(tmp_path):
  result = suite.run_peer(suite.PEER_STEP, '--steps=2', '--warmup=1',
                          '--batch_size=4')
  assert len(result['step_seconds']) == 2 and result['batch_size'] == 4
  assert result['torch'] and result['threads'] >= 1
  with pytest.raises(RuntimeError, match='peers.torch_fast_mnist failed'):
    suite.run_peer(suite.PEER_RECIPE, f'--data={tmp_path / "missing.npz"}')


def test_peer_data_holds_the_configs_splits(tmp_path):
  data_dir = write_idx_folder(tmp_path / 'idx', num_train=300, num_test=120)
  path = str(tmp_path / 'peer.npz')
  suite.write_peer_data(tiny_config(data_dir), path)
  with np.load(path) as data:
    assert data['train_images'].shape == (300, 28, 28, 1)
    assert data['test_labels'].shape == (120,)
    images, labels = synthetic_digits(120, 1)
    np.testing.assert_array_equal(data['test_images'][..., 0], images)
    np.testing.assert_array_equal(data['test_labels'], labels)
