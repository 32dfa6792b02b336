"""The scripts end to end: bad input is one line and a non-zero exit, with
nothing written over; training resumes; faults stop cleanly."""

import json
import os
import shutil

import pytest

from mnist_jax import data as data_lib

from conftest import run_script, write_idx_folder

TINY_FLAGS = ('--config.model_kwargs.widths=(8,16)', '--config.model_kwargs.dense=32',
              '--config.batch_size=64', '--config.eval_batch_size=64')


def train_args(workdir, data_dir, *extra):
  return (f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          '--config.num_epochs=2', *TINY_FLAGS, *extra)


def assert_one_line_error(result, *fragments):
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def snapshot(folder):
  """Every file under `folder` with its bytes."""
  files = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, folder)] = f.read()
  return files


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  """A finished two-epoch run on tiny synthetic data, with predictions."""
  root = tmp_path_factory.mktemp('trained')
  data_dir = write_idx_folder(root / 'idx')
  workdir = str(root / 'work')
  result = run_script('train.py', *train_args(workdir, data_dir))
  assert result.returncode == 0, result.stderr
  result = run_script('evaluate.py', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  return workdir, data_dir


def test_evaluate_reproduces_training_accuracy(trained_workdir):
  workdir, _ = trained_workdir
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    final = [json.loads(line) for line in f][-1]
  with open(os.path.join(workdir, 'eval.json')) as f:
    evaluation = json.load(f)
  assert evaluation['num_examples'] == final['test_examples'] == 200
  assert evaluation['accuracy'] == pytest.approx(final['test_accuracy'], abs=1e-9)
  with open(os.path.join(workdir, 'predictions.csv')) as f:
    rows = f.read().splitlines()
  assert rows[0].split(',')[:4] == ['index', 'label', 'prediction', 'confidence']
  assert len(rows) == 201


@pytest.mark.parametrize('flags, fragments', [
    (('--config.model=resnet',), ("--config.model: unknown model 'resnet'",)),
    (('--config.optimizer=lion',), ("--config.optimizer: unknown optimizer 'lion'",)),
    (('--config.batch_size=0',), ('--config.batch_size: must be a positive integer',)),
    (('--config.learning_rate=-1.0',), ('--config.learning_rate: must be positive',)),
])
def test_bad_config_values(tmp_path, tiny_idx_dir, flags, fragments):
  workdir = tmp_path / 'work'
  result = run_script('train.py', *train_args(workdir, tiny_idx_dir, *flags))
  assert_one_line_error(result, *fragments)
  assert not workdir.exists()  # rejected before anything was written


def test_missing_data_folder(tmp_path):
  result = run_script('train.py', *train_args(tmp_path / 'w', tmp_path / 'nope'))
  assert_one_line_error(result, 'does not exist', str(tmp_path / 'nope'))


def test_corrupt_idx_file(tmp_path):
  data_dir = write_idx_folder(tmp_path / 'idx', gzip=True)
  path = os.path.join(data_dir, data_lib.idx_filenames('test')[1] + '.gz')
  with open(path, 'r+b') as f:
    f.truncate(20)
  result = run_script('train.py', *train_args(tmp_path / 'w', data_dir))
  assert_one_line_error(result, path, 'corrupt or truncated gzip')


def test_unwritable_workdir(tmp_path, tiny_idx_dir):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  result = run_script('train.py', *train_args(blocker / 'work', tiny_idx_dir))
  assert_one_line_error(result, '--workdir', 'not a writable directory')


def test_checkpoint_of_another_config_is_refused(trained_workdir):
  workdir, data_dir = trained_workdir
  before = snapshot(workdir)
  result = run_script('train.py', *train_args(workdir, data_dir,
                                              '--config.learning_rate=0.5'))
  assert_one_line_error(result, 'holds a run of a different config',
                        'learning_rate: 0.01 -> 0.5')
  assert snapshot(workdir) == before


def test_evaluate_without_checkpoint(tmp_path):
  result = run_script('evaluate.py', f'--workdir={tmp_path}')
  assert_one_line_error(result, 'no checkpoints folder')
