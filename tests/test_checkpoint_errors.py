"""A damaged checkpoint is one `error:` line and exit code 2 from evaluate.py
and from a resumed train.py, with nothing written; a readable checkpoint of
another model still says so."""

import json
import os
import shutil

import pytest

from conftest import assert_one_line_error, run_script, snapshot, write_idx_folder
from test_scripts import train_args

ONE_EPOCH = ('--config.num_epochs=1',)  # 128 examples: 2 steps, 1 checkpoint


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, data_dir) of a finished one-epoch run on tiny data."""
  root = tmp_path_factory.mktemp('trained')
  data_dir = write_idx_folder(root / 'idx', num_train=128, num_test=64)
  workdir = str(root / 'work')
  result = run_script('train.py', *train_args(workdir, data_dir, *ONE_EPOCH))
  assert result.returncode == 0, result.stderr
  return workdir, data_dir


def _step_folder(workdir):
  checkpoints = os.path.join(workdir, 'checkpoints')
  steps = [name for name in os.listdir(checkpoints) if name.isdigit()]
  assert len(steps) == 1, steps
  return os.path.join(checkpoints, steps[0])


def _truncate_array_data(step_folder):
  data = os.path.join(step_folder, 'state', 'ocdbt.process_0', 'd')
  for name in os.listdir(data):
    path = os.path.join(data, name)
    os.truncate(path, os.path.getsize(path) // 2)


def _garble_config(step_folder):
  with open(os.path.join(step_folder, 'config', 'metadata'), 'w') as f:
    f.write('{not json')


def _delete_config(step_folder):
  os.remove(os.path.join(step_folder, 'config', 'metadata'))


def _copy(trained, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(trained[0], workdir)
  return workdir


def _assert_rejected(result, workdir, message):
  assert_one_line_error(result, message)  # and exit code 2
  for name in ('eval.json', 'predictions.csv'):
    assert not os.path.exists(os.path.join(workdir, name)), name


@pytest.mark.parametrize('corrupt', [
    _truncate_array_data, _garble_config, _delete_config])
def test_corrupt_checkpoint_is_one_line_error(trained, tmp_path, corrupt):
  workdir = _copy(trained, tmp_path)
  step_folder = _step_folder(workdir)
  corrupt(step_folder)
  message = (f'{os.path.dirname(step_folder)}: checkpoint '
             f'{os.path.basename(step_folder)} is unreadable '
             '(corrupt or incomplete?): ')
  before = snapshot(workdir)

  _assert_rejected(run_script('evaluate.py', f'--workdir={workdir}'),
                   workdir, message)
  resumed = run_script('train.py', *train_args(workdir, trained[1], *ONE_EPOCH))
  _assert_rejected(resumed, workdir, message)
  assert snapshot(workdir) == before


def test_checkpoint_of_another_model_says_so(trained, tmp_path):
  """A readable checkpoint whose config was edited to a wider model."""
  workdir = _copy(trained, tmp_path)
  step_folder = _step_folder(workdir)
  path = os.path.join(step_folder, 'config', 'metadata')
  with open(path) as f:
    config = json.load(f)
  config['model_kwargs']['widths'] = [8, 32]
  with open(path, 'w') as f:
    json.dump(config, f)

  result = run_script('evaluate.py', f'--workdir={workdir}')
  _assert_rejected(result, workdir, (
      f'{os.path.dirname(step_folder)}: checkpoint '
      f'{os.path.basename(step_folder)} does not match this model ('))
  assert 'in the checkpoint, (32,) in this model' in result.stderr
