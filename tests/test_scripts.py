"""The scripts as a user runs them: one subprocess per script for the exit
on bad input (code 2, one 'error:' line, no traceback, nothing written;
test_cli has every bad input in-process), and the whole pipeline on the real
MNIST files."""

import csv
import json
import os

import pytest

from conftest import (assert_one_line_error, latest_step_folder,
                      once_per_session, run_in_process, run_script, snapshot,
                      trained_run_args)
from test_outliers import write_tiny_workdir

pytestmark = pytest.mark.slow


def _truncate_array_data(workdir) -> str:
  """Halves every array file of the latest checkpoint; returns its folder."""
  step_folder = latest_step_folder(workdir)
  data = os.path.join(step_folder, 'state', 'ocdbt.process_0', 'd')
  for name in os.listdir(data):
    path = os.path.join(data, name)
    os.truncate(path, os.path.getsize(path) // 2)
  return step_folder


@pytest.mark.parametrize('script', ['train.py', 'evaluate.py'])
def test_a_damaged_checkpoint_exits_with_one_line(script, trained_run,
                                                  trained_copy):
  """Orbax's background reads fail too: they must not print tracebacks as
  the script exits."""
  step_folder = _truncate_array_data(trained_copy)
  before = snapshot(trained_copy)
  args = (trained_run_args(trained_copy, trained_run.data_dir)
          if script == 'train.py' else
          (f'--workdir={trained_copy}', f'--data_dir={trained_run.data_dir}'))
  assert_one_line_error(
      run_script(script, *args),
      f'{os.path.dirname(step_folder)}: checkpoint '
      f'{os.path.basename(step_folder)} is unreadable (corrupt or incomplete?)')
  assert snapshot(trained_copy) == before


def test_outliers_py_exits_with_one_line(tmp_path):
  workdir, data_dir, _ = write_tiny_workdir(tmp_path)
  path = workdir / 'predictions.csv'
  path.write_text(''.join(path.read_text().splitlines(True)[:-1]))
  before = snapshot(workdir)
  result = run_script('outliers.py', f'--workdir={workdir}',
                      '--features=pixels', f'--data_dir={data_dir}')
  assert_one_line_error(result, f'{path} has 199 rows but the test split')
  assert snapshot(workdir) == before


# --------------------------------------------------------------- real data


def _read_json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope='session')
def mnist_workdir(tmp_path_factory, mnist_dir):
  """configs/fast.py trained on the real MNIST files by scripts/train.py
  (once per session, for every pytest-xdist worker): (workdir, its stdout)."""
  def train_fast(workdir):
    error, stdout = run_in_process('train.py', '--config=configs/fast.py',
                                   f'--workdir={workdir}',
                                   f'--config.data_dir={mnist_dir}')
    assert error is None, error
    return stdout
  workdir, stdout = once_per_session(tmp_path_factory, 'mnist', train_fast)
  return str(workdir), stdout


def test_fast_config_reaches_99_percent_on_all_test_images(mnist_workdir):
  workdir, stdout = mnist_workdir
  records = [json.loads(line) for line in
             open(os.path.join(workdir, 'metrics.jsonl'))]
  assert len(records) == 1  # one epoch
  final = records[-1]
  assert final['test_examples'] == 10_000
  assert final['test_accuracy'] >= 0.99
  assert (f'test accuracy {final["test_accuracy"]:.4f} on 10000 test images '
          'after epoch 1') in stdout


def test_evaluate_and_outliers_agree_with_training(mnist_workdir):
  workdir, _ = mnist_workdir
  error, stdout = run_in_process('evaluate.py', f'--workdir={workdir}')
  assert error is None, error
  evaluation = _read_json(os.path.join(workdir, 'eval.json'))
  final = [json.loads(line) for line in
           open(os.path.join(workdir, 'metrics.jsonl'))][-1]
  assert evaluation['num_examples'] == 10_000 and evaluation['tta'] is False
  assert evaluation['accuracy'] == pytest.approx(final['test_accuracy'],
                                                 abs=1e-9)
  assert f'({evaluation["num_misclassified"]} misclassified)' in stdout

  # Pixels only: the embeddings' analysis would predict the 60,000 training
  # images again (their checks run on synthetic data in test_cli).
  error, stdout = run_in_process('outliers.py', f'--workdir={workdir}',
                                 '--features=pixels')
  assert error is None, error
  summary = _read_json(os.path.join(workdir, 'outliers.json'))
  assert 'outlier analysis took' in stdout
  assert 'pixels' in summary['analyses']
  for analysis in summary['analyses'].values():
    table = analysis['overall']['table']
    assert sum(map(sum, table)) == 10_000
    assert sum(table[0]) == evaluation['num_misclassified']
  # contamination 0.05 of the 10,000 fitted test images are outliers
  table = summary['analyses']['pixels']['overall']['table']
  assert table[0][0] + table[1][0] == pytest.approx(500, abs=5)
  with open(os.path.join(workdir, 'outliers.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 10_000
  assert sum(row['correct'] == '0' for row in rows) == \
      evaluation['num_misclassified']
  assert os.path.exists(os.path.join(workdir, 'report.md'))
