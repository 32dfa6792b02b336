"""The whole pipeline on the real MNIST files: train, evaluate, outliers."""

import csv
import json
import os

import pytest

from conftest import run_script


def _read_json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def mnist_run(tmp_path_factory, mnist_dir):
  """configs/fast.py with test-time augmentation (tta.py), which evaluate.py
  and outliers.py then take from the checkpoint's config."""
  workdir = str(tmp_path_factory.mktemp('mnist'))
  result = run_script('train.py', '--config=configs/fast.py', f'--workdir={workdir}',
                      f'--config.data_dir={mnist_dir}', '--config.tta=true')
  assert result.returncode == 0, result.stderr
  return workdir


def test_fast_config_trains_to_97_percent_on_all_test_images(mnist_run):
  with open(os.path.join(mnist_run, 'metrics.jsonl')) as f:
    final = json.loads(f.readlines()[-1])
  assert final['test_examples'] == 10_000
  assert final['test_accuracy'] >= 0.97
  assert final['test_accuracy_tta'] >= 0.97
  assert final['test_loss_tta'] != final['test_loss']


def test_evaluate_and_outliers_agree_with_training(mnist_run):
  result = run_script('evaluate.py', f'--workdir={mnist_run}')
  assert result.returncode == 0, result.stderr
  evaluation = _read_json(os.path.join(mnist_run, 'eval.json'))
  with open(os.path.join(mnist_run, 'metrics.jsonl')) as f:
    final = json.loads(f.readlines()[-1])
  assert evaluation['num_examples'] == 10_000
  assert evaluation['tta'] is True
  assert evaluation['accuracy'] == pytest.approx(final['test_accuracy_tta'], abs=1e-9)

  result = run_script('outliers.py', f'--workdir={mnist_run}')
  assert result.returncode == 0, result.stderr
  summary = _read_json(os.path.join(mnist_run, 'outliers.json'))
  for space in ('pixels', 'embeddings'):
    table = summary['analyses'][space]['overall']['table']
    assert sum(map(sum, table)) == 10_000
    assert sum(table[0]) == evaluation['num_misclassified']
    # contamination 0.05 of the 10,000 fitted test images are outliers
    assert table[0][0] + table[1][0] == pytest.approx(500, abs=5)
  with open(os.path.join(mnist_run, 'outliers.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 10_000
  assert sum(row['correct'] in ('0', 'False', 'false') for row in rows) == \
      evaluation['num_misclassified']
  assert os.path.exists(os.path.join(mnist_run, 'report.md'))
