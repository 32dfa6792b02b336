"""evaluate.py and outliers.py check every output path and the data folder
before they write anything, name only flags they have, and evaluate a
checkpoint on any device count; eval.json's summary from sklearn's matrix."""

import csv
import os
import shutil

import numpy as np
import pytest

from mnist_jax import evaluate
from mnist_jax.outliers import figures
from mnist_jax import io_utils
from mnist_jax.outliers import analysis as outlier_analysis
from mnist_jax import parallel
from mnist_jax import train

from conftest import assert_one_line_error, run_script, snapshot, tiny_config, write_idx_folder

TWO_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, data_dir): one epoch trained with eval_batch_size=999, then
  evaluated and outlier-analysed; the data folder was moved after training,
  so the one saved with the checkpoint is gone."""
  root = tmp_path_factory.mktemp('trained')
  saved_dir = write_idx_folder(root / 'idx')
  workdir = str(root / 'work')
  train.train_and_evaluate(
      tiny_config(saved_dir, num_epochs=1, eval_batch_size=999), workdir)
  data_dir = str(root / 'moved')
  os.rename(saved_dir, data_dir)
  evaluate.evaluate_workdir(workdir, data_dir)
  outlier_analysis.run_outlier_analysis(workdir, features='pixels',
                                        data_dir=data_dir)
  return workdir, data_dir


@pytest.fixture
def workdir(trained, tmp_path):
  """A copy of the trained workdir that a test may change."""
  return shutil.copytree(trained[0], tmp_path / 'work')


def _taken_by_folder(workdir, name: str) -> str:
  path = os.path.join(workdir, name)
  os.remove(path)
  os.mkdir(path)
  return path


# ------------------------------------------------------------ output paths


@pytest.mark.parametrize('name', evaluate.OUTPUT_NAMES)
def test_evaluate_output_taken_by_folder_changes_nothing(trained, workdir,
                                                         name):
  path = _taken_by_folder(workdir, name)
  before = snapshot(workdir)
  result = run_script('evaluate.py', f'--workdir={workdir}',
                      f'--data_dir={trained[1]}')
  assert_one_line_error(result, path, 'is a directory')
  assert snapshot(workdir) == before


@pytest.mark.parametrize('name', ['outliers.json',
                                  'outliers_pixels_label_errors.png'])
def test_outliers_output_taken_by_folder_changes_nothing(trained, workdir,
                                                         name):
  path = _taken_by_folder(workdir, name)
  before = snapshot(workdir)
  result = run_script('outliers.py', f'--workdir={workdir}',
                      '--features=pixels', f'--data_dir={trained[1]}')
  assert_one_line_error(result, path, 'is a directory')
  assert snapshot(workdir) == before


def test_outlier_output_names_cover_every_written_file(workdir):
  written = {name for name in os.listdir(workdir)
             if name.startswith('outliers') or name == 'report.md'}
  assert written == (set(outlier_analysis.TABLE_AND_REPORT_NAMES) |
                     set(figures.figure_names('pixels').values()))


def test_check_output_paths(tmp_path):
  (tmp_path / 'b.json').mkdir()
  assert io_utils.check_output_paths(str(tmp_path), ['a.csv']) == [
      str(tmp_path / 'a.csv')]
  with pytest.raises((ValueError, TypeError, OSError), match='b.json.* is a directory'):
    io_utils.check_output_paths(str(tmp_path), ['a.csv', 'b.json'])


# ------------------------------------------------------------- data folder


@pytest.mark.parametrize('script, extra', [('evaluate.py', ()),
                                           ('outliers.py', ('--features=pixels',))])
def test_moved_data_folder_says_pass_data_dir(trained, workdir, script, extra):
  before = snapshot(workdir)
  result = run_script(script, f'--workdir={workdir}', *extra)
  assert_one_line_error(result, 'saved with the checkpoint', 'does not exist',
                        'pass --data_dir')
  assert '--config' not in result.stderr
  assert snapshot(workdir) == before


@pytest.mark.parametrize('data_dir, message', [
    ('/nonexistent', "--data_dir: data folder '/nonexistent' does not exist"),
    ('', '--data_dir: empty'),
])
def test_bad_data_dir_flag(workdir, data_dir, message):
  with pytest.raises((ValueError, TypeError, OSError), match=message) as raised:
    evaluate.evaluate_workdir(str(workdir), data_dir)
  assert '--config' not in str(raised.value)
  with pytest.raises((ValueError, TypeError, OSError), match=message):
    evaluate.check_data_dir(str(workdir), data_dir)


def test_evaluate_rejects_empty_data_dir_flag(workdir):
  before = snapshot(workdir)
  result = run_script('evaluate.py', f'--workdir={workdir}', '--data_dir=')
  assert_one_line_error(result, '--data_dir: empty')
  assert snapshot(workdir) == before


# --------------------------------------------------------- device batches


def test_device_batch_size_rounds_up_to_device_multiple():
  assert parallel.device_batch_size(999, 2) == 1000
  assert parallel.device_batch_size(999, 1) == 999
  assert parallel.device_batch_size(64, 8) == 64
  assert parallel.device_batch_size(1, 8) == 8


def _read_rows(path) -> list[dict[str, str]]:
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_two_devices_evaluate_checkpoint_of_odd_eval_batch_size(trained,
                                                                workdir):
  one_device = _read_rows(os.path.join(trained[0], 'predictions.csv'))
  result = run_script('evaluate.py', f'--workdir={workdir}',
                      f'--data_dir={trained[1]}', env=TWO_DEVICES)
  assert result.returncode == 0, result.stderr
  two_devices = _read_rows(workdir / 'predictions.csv')
  assert len(two_devices) == len(one_device) == 200
  for key in ('index', 'label', 'prediction'):
    assert [r[key] for r in two_devices] == [r[key] for r in one_device]
  probabilities = lambda rows: [[float(r[f'prob_{k}']) for k in range(10)]
                                for r in rows]
  np.testing.assert_allclose(probabilities(two_devices),
                             probabilities(one_device), atol=1e-5)


# ------------------------------------------------------------ eval summary


def test_eval_summary_hand_example():
  labels = np.array([0, 0, 1, 2])
  probabilities = np.full((4, 10), 0.05)
  for row, predicted in enumerate([0, 1, 1, 1]):
    probabilities[row, predicted] = 0.55
  summary = evaluate.eval_summary(labels, probabilities)
  matrix = summary['confusion_matrix']  # rows: true label, columns: prediction
  assert len(matrix) == len(matrix[0]) == 10
  assert matrix[0][0] == 1 and matrix[0][1] == 1
  assert matrix[1][1] == 1 and matrix[2][1] == 1
  assert sum(map(sum, matrix)) == 4
  per_class = summary['per_class_accuracy']
  assert (per_class['0'], per_class['1'], per_class['2']) == (0.5, 1.0, 0.0)
  assert per_class['9'] == 0.0  # no examples: 0, not nan
  assert summary['num_misclassified'] == 2
  assert summary['accuracy'] == 0.5
  assert summary['num_examples'] == 4


def test_predictions_from_another_checkpoint_are_refused(trained, workdir):
  """The embeddings come from the latest checkpoint; predictions.csv must too."""
  data_dir = trained[1]
  outlier_analysis.run_outlier_analysis(str(workdir), features='both',
                                        data_dir=data_dir)
  path = os.path.join(workdir, 'predictions.csv')
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  header, row = rows[0], rows[3]  # line 4 of the file
  top = header.index(f'prob_{row[header.index("prediction")]}')
  other = header.index('prob_0') if top != header.index('prob_0') else header.index('prob_1')
  # Move 0.05 of probability between two classes: rows still sum to 1.
  row[top] = f'{float(row[top]) - 0.05:.6f}'
  row[other] = f'{float(row[other]) + 0.05:.6f}'
  with open(path, 'w', newline='') as f:
    csv.writer(f, lineterminator='\n').writerows(rows)
  before = snapshot(workdir)
  with pytest.raises((ValueError, TypeError, OSError), match=r"probabilities differ from the latest "
                     r"checkpoint's at 1 rows \(first at line 4\)"):
    outlier_analysis.run_outlier_analysis(str(workdir), features='embeddings',
                                          data_dir=data_dir)
  assert snapshot(workdir) == before
