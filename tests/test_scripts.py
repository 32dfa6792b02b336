"""The scripts end to end: bad input is one line and a non-zero exit, with
nothing written over; training resumes; faults stop cleanly."""

import json
import os
import shutil

import pytest

from mnist_jax import data as data_lib

from conftest import assert_one_line_error, run_script, snapshot, write_idx_folder

TINY_FLAGS = ('--config.model_kwargs.widths=(8,16)', '--config.model_kwargs.dense=32',
              '--config.batch_size=64', '--config.eval_batch_size=64')


def train_args(workdir, data_dir, *extra):
  return (f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          '--config.num_epochs=2', *TINY_FLAGS, *extra)


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
  assert evaluation['tta'] is False and 'test_accuracy_tta' not in final
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
    (('--config.tta=yes',), ('--config.tta=yes', 'Non-boolean argument')),
])
def test_bad_config_values(tmp_path, tiny_idx_dir, flags, fragments):
  workdir = tmp_path / 'work'
  result = run_script('train.py', *train_args(workdir, tiny_idx_dir, *flags))
  assert_one_line_error(result, *fragments)
  assert not workdir.exists()  # rejected before anything was written


CONFIG_FILES = {
    'syntax.py': ('def get_config(:\n', 'invalid syntax'),
    'no_get_config.py': ('x = 1\n', "has no attribute 'get_config'"),
    'returns_int.py': ('def get_config():\n  return 3\n',
                       'get_config() returned int, not a ConfigDict'),
    'raises.py': ('def get_config():\n  raise ValueError("bad width")\n',
                  'bad width'),
}


@pytest.mark.parametrize('name', sorted(CONFIG_FILES))
def test_config_file_that_does_not_load(tmp_path, name):
  text, reason = CONFIG_FILES[name]
  path = tmp_path / name
  path.write_text(text)
  for extra in ((), ('--config.batch_size=8',)):  # with an override too
    result = run_script('train.py', f'--workdir={tmp_path / "w"}',
                        f'--config={path}', *extra)
    assert_one_line_error(result, str(path), reason)
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('script, flags, fragments', [
    ('train.py', ('--config=configs/nope.py',),
     ('--config=configs/nope.py', 'No such file')),
    ('train.py', ('--config=configs/nope.py', '--config.batch_size=8'),
     ('--config=configs/nope.py', 'No such file')),
    ('train.py', ('--config=configs/fast.py', '--config=configs/nope.py'),
     ('--config=configs/nope.py', 'No such file')),  # the last one counts
    ('train.py', ('--config.nosuch=1',),  # the default config file
     ('--config.nosuch: configs/default.py has no such key',)),
    ('train.py', ('--config=configs/fast.py', '--config.btach_size=8'),
     ('--config.btach_size: configs/fast.py has no such key',)),
    ('train.py', ('--config=configs/fast.py', '--config.model_kwargs.downsample=x'),
     ('--config.model_kwargs.downsample: configs/fast.py has no such key',)),
    ('train.py', ('--config=configs/fast.py', '--config.batch_size=abc'),
     ('--config.batch_size=abc', 'invalid literal')),
    ('benchmark.py', ('--config=configs/fast.py', '--config.nosuch=1'),
     ('--config.nosuch: configs/fast.py has no such key',)),
    ('outliers.py', ('--features=all',), ('--features=all',)),
    ('evaluate.py', (), ('--workdir',)),
])
def test_bad_flags_are_one_line(tmp_path, script, flags, fragments):
  result = run_script(script, f'--workdir={tmp_path / "w"}' if script != 'evaluate.py'
                      else '--data_dir=x', *flags)
  assert_one_line_error(result, *fragments)  # absl alone: exit 1, traceback


@pytest.mark.parametrize('flags, fragment', [
    (('--config.model_kwargs.dense=0',),
     '--config.model_kwargs.dense: must be a positive integer, got 0'),
    (('--config.model_kwargs.widths=(0,32)',), '--config.model_kwargs.widths'),
    (('--config.model_kwargs.dropout=1.5',), '--config.model_kwargs.dropout'),
    (('--config.model_kwargs.convs_per_stage=-1',),
     '--config.model_kwargs.convs_per_stage'),
])
def test_bad_model_kwargs(tmp_path, tiny_idx_dir, flags, fragment):
  workdir = tmp_path / 'w'
  result = run_script('train.py', *train_args(workdir, tiny_idx_dir, *flags))
  assert_one_line_error(result, fragment)
  assert not workdir.exists()


def test_missing_data_folder(tmp_path):
  result = run_script('train.py', *train_args(tmp_path / 'w', tmp_path / 'nope'))
  assert_one_line_error(result, 'does not exist', str(tmp_path / 'nope'))
  assert not (tmp_path / 'w').exists()  # no empty workdir left behind


def test_corrupt_idx_file(tmp_path):
  data_dir = write_idx_folder(tmp_path / 'idx', gzip=True)
  path = os.path.join(data_dir, data_lib.idx_filenames('test')[1] + '.gz')
  with open(path, 'r+b') as f:
    f.truncate(20)
  result = run_script('train.py', *train_args(tmp_path / 'w', data_dir))
  assert_one_line_error(result, path, 'corrupt or truncated gzip')
  assert not (tmp_path / 'w').exists()


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
