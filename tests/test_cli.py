"""Every bad input the scripts know, as the one line they print.

One table: each row is a script, its command line and what the line after
'error: ' holds. Each runs in this process (conftest.run_in_process: the
script's own flags and main, as cli.run calls them), and must leave its
workdir as it was. tests/test_scripts.py checks the real exit (code 2, that
line, no traceback) once per script in a subprocess.

Placeholders in a row ({work}, {data}, ...) are the paths of `Inputs`, made
on first use in the test's tmp_path; `damage` then breaks one of them.
"""

import dataclasses
import json
import os
import shlex
import shutil
import sys
from typing import Callable

import numpy as np
import pytest
from absl import flags

from mnist_jax import cli
from mnist_jax import data as data_lib
from mnist_jax.outliers import figures

from conftest import (TINY_FLAGS, TRAINED_STEPS, latest_step_folder,
                      run_in_process, script_flags, snapshot, trained_run_args,
                      write_idx_folder)
from test_outliers import write_tiny_workdir


class Inputs(dict):
  """The paths a row names, by placeholder, each made when first named."""

  def __init__(self, tmp_path, request):
    super().__init__(tmp=str(tmp_path), work=str(tmp_path / 'work'),
                     step=str(TRAINED_STEPS))
    self._tmp_path, self._request = tmp_path, request
    self.workdirs = ['work']  # placeholders of workdirs that must not change

  def __missing__(self, key):
    self[key] = getattr(self, f'_make_{key}')()
    return self[key]

  def _make_data(self):
    return write_idx_folder(self._tmp_path / 'idx')

  def _make_data_gz(self):
    return write_idx_folder(self._tmp_path / 'idx_gz', gzip=True)

  def _make_tiny(self):
    """scripts/train.py's flags for a new tiny run (conftest.tiny_config)."""
    return shlex.join([f'--workdir={self["work"]}',
                       f'--config.data_dir={self["data"]}', *TINY_FLAGS])

  def _make_run(self):
    """A copy of conftest's trained run (one epoch, its data moved)."""
    run = self._request.getfixturevalue('trained_run')
    self['run_data'] = run.data_dir
    self.workdirs.append('run')
    return str(shutil.copytree(run.workdir, self._tmp_path / 'run'))

  def _make_run_data(self):
    self['run']  # pylint: disable=pointless-statement
    return self['run_data']

  def _make_resume(self):
    """scripts/train.py's flags that resume the copy of the trained run."""
    return shlex.join(trained_run_args(self['run'], self['run_data']))

  def _make_checkpoints(self):
    return os.path.join(self['run'], 'checkpoints')

  def _make_pred(self):
    """A copy of a workdir holding only predictions.csv (test_outliers)."""
    workdir, self['pred_data'] = self._request.getfixturevalue(
        'predictions_workdir')
    self.workdirs.append('pred')
    return str(shutil.copytree(workdir, self._tmp_path / 'pred'))

  def _make_pred_data(self):
    self['pred']  # pylint: disable=pointless-statement
    return self['pred_data']

  def _make_saved_data(self):
    """Where the trained run's data was when it was trained (now gone)."""
    return os.path.join(os.path.dirname(self['run_data']), 'saved')


@pytest.fixture(scope='module')
def predictions_workdir(tmp_path_factory) -> tuple[str, str]:
  """(workdir, data_dir): test_outliers' workdir holding predictions.csv,
  and its data folder (read-only)."""
  workdir, data_dir, _ = write_tiny_workdir(tmp_path_factory.mktemp('pred'))
  return str(workdir), str(data_dir)


@dataclasses.dataclass(frozen=True)
class Case:
  script: str
  args: str  # the command line, with {placeholders}
  expected: tuple[str, ...]  # fragments of the error line, with placeholders
  damage: Callable[[Inputs], None] | None = None
  env: tuple[tuple[str, str], ...] = ()


def case(script, args, *expected, damage=None, env=(), marks=(), id=None):  # pylint: disable=redefined-builtin
  return pytest.param(Case(script, args, expected, damage, tuple(env)),
                      marks=marks, id=id)


SLOW = pytest.mark.slow  # rows that need conftest's trained run


# ---------------------------------------------------------------- damage


def _write(placeholder, name, text):
  def damage(inputs):
    path = os.path.join(inputs[placeholder], name.format_map(inputs))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      f.write(text)
  return damage


def _edit_bytes(placeholder, name, edit):
  def damage(inputs):
    path = os.path.join(inputs[placeholder], name)
    with open(path, 'rb') as f:
      raw = f.read()
    with open(path, 'wb') as f:
      f.write(edit(raw))
  return damage


def _write_idx(name, array):
  return lambda inputs: data_lib.write_idx(
      os.path.join(inputs['data'], name), array)


def _remove(placeholder, name):
  return lambda inputs: os.remove(
      os.path.join(inputs[placeholder], name.format_map(inputs)))


def _replace_by_folder(placeholder, name):
  def damage(inputs):
    path = os.path.join(inputs[placeholder], name)
    if os.path.exists(path):
      os.remove(path)
    os.mkdir(path)
  return damage


TRAIN_IMAGES, TRAIN_LABELS = data_lib.idx_filenames('train')
_, TEST_LABELS = data_lib.idx_filenames('test')


def _labels_with(value, at):
  labels = np.zeros(512, np.uint8)
  labels[at] = value
  return labels


def _truncate_array_data(inputs):
  data = os.path.join(latest_step_folder(inputs['run']), 'state',
                      'ocdbt.process_0', 'd')
  for name in os.listdir(data):
    path = os.path.join(data, name)
    os.truncate(path, os.path.getsize(path) // 2)


def _edit_saved_config(edit):
  def damage(inputs):
    path = os.path.join(latest_step_folder(inputs['run']), 'config', 'metadata')
    with open(path) as f:
      config = json.load(f)
    edit(config)
    with open(path, 'w') as f:
      json.dump(config, f)
  return damage


def _edit_predictions(placeholder, edit):
  """Applies `edit` to the rows (lists of fields) of predictions.csv."""
  def damage(inputs):
    path = os.path.join(inputs[placeholder], 'predictions.csv')
    with open(path) as f:
      rows = [line.split(',') for line in f.read().splitlines()]
    edit(rows)
    with open(path, 'w') as f:
      f.write(''.join(','.join(row) + '\n' for row in rows))
  return damage


def _drop_columns(*names):
  def edit(rows):
    keep = [i for i, name in enumerate(rows[0]) if name not in names]
    rows[:] = [[row[i] for i in keep] for row in rows]
  return edit


def _set_field(line, column, value):
  def edit(rows):
    rows[line - 1][rows[0].index(column)] = value
  return edit


def _shift_probability(line):
  """Moves 0.05 of probability from the top class to another: the row still
  sums to 1, but no longer matches the checkpoint's prediction."""
  def edit(rows):
    header, row = rows[0], rows[line - 1]
    top = header.index(f'prob_{row[header.index("prediction")]}')
    other = header.index('prob_0' if header[top] != 'prob_0' else 'prob_1')
    row[top] = f'{float(row[top]) - 0.05:.6f}'
    row[other] = f'{float(row[other]) + 0.05:.6f}'
  return edit


PREDICTIONS_HEADER = ('index,label,prediction,confidence,' +
                      ','.join(f'prob_{k}' for k in range(10)))


def _config_file(name, text):
  """Writes {tmp}/NAME.py. ml_collections loads every --config file as the
  same module, config_config, executing it into the module object an earlier
  file of this process left in sys.modules (a file without get_config would
  get that file's): drop it first, as a new process would start."""
  write = _write('tmp', f'{name}.py', text)

  def damage(inputs):
    sys.modules.pop('config_config', None)
    write(inputs)
  return damage


# name: (text, the reason the error line gives)
CONFIG_FILES = {
    'syntax': ('def get_config(:\n', 'invalid syntax'),
    'no_get_config': ('x = 1\n', "has no attribute 'get_config'"),
    'returns_int': ('def get_config():\n  return 3\n',
                    'get_config() returned int, not a ConfigDict'),
    'raises': ('def get_config():\n  raise ValueError("bad width")\n',
               'bad width'),
}

DEFAULT_CONFIG_WITHOUT = """from mnist_jax import config as config_lib

def get_config():
  config = config_lib.default_config()
  del config[{key!r}]
  {then}
  return config
"""


# ------------------------------------------------------------------ table


CONFIG_VALUES = [
    ('batch_size', '0', 'must be a positive integer, got 0'),
    ('batch_size', '-5', 'must be a positive integer, got -5'),
    ('learning_rate', '0.0', 'must be positive, got 0.0'),
    ('learning_rate', '-0.1', 'must be positive, got -0.1'),
    ('num_epochs', '0', 'must be a positive integer, got 0'),
    ('model', 'vgg', "unknown model 'vgg'; choose one of cnn, convnet, mlp"),
    ('optimizer', 'lion', "unknown optimizer 'lion'; choose one of sgd, "),
    ('schedule', 'step', "unknown schedule 'step'; choose one of constant, "),
    ('warmup_epochs', '2.0', 'must be in [0, num_epochs=2), got 2.0'),
    ('warmup_epochs', '-0.5', 'must be in [0, num_epochs=2), got -0.5'),
    ('ema_decay', '1.0', 'must be in [0, 1), got 1.0'),
    ('eval_batch_size', '0', 'must be a positive integer, got 0'),
    ('label_smoothing', '1.0', 'must be in [0, 1), got 1.0'),
    ('max_shift', '9', 'must be 0-8 pixels, got 9'),
    ('max_rotation', '-1.0', 'must be 0-45 degrees, got -1.0'),
    ('max_scale', '1.0', 'must be in [0, 1), got 1.0'),
    ('elastic_alpha', '-1.0', 'must be 0-100 pixels, got -1.0'),
    ('elastic_sigma', '0.0', 'must be 0.5-10 pixels, got 0.0'),
    ('checkpoint_every_steps', '-1', 'must be >= 0, got -1'),
    ('keep_checkpoints', '0', 'must be >= 1, got 0'),
    ('log_every_steps', '-1', 'must be >= 0, got -1'),
    ('seed', '-1', 'must be an integer in [0, 2**32), got -1'),
    ('seed', str(2**32), f'must be an integer in [0, 2**32), got {2**32}'),
    ('momentum', '1.0', 'must be in [0, 1), got 1.0'),
    ('weight_decay', '-0.0001', 'must be >= 0, got -0.0001'),
    ('model_kwargs.dense', '0', 'must be a positive integer, got 0'),
    ('model_kwargs.widths', '(0,32)', 'must be positive integers, one per '
     'stage, got (0, 32)'),
    ('model_kwargs.dropout', '1.5', 'must be in [0, 1), got 1.5'),
    ('model_kwargs.convs_per_stage', '-1', 'must be positive integers, got -1'),
]

CASES = [
    # ------------------------------------------------- train.py: the config
    *(case('train.py', f'--workdir={{work}} --config.num_epochs=2 '
           f'--config.{key}={value}',
           f'--config.{key}: {message}', id=f'config.{key}={value}')
      for key, value, message in CONFIG_VALUES),
    case('train.py', '{tiny} --config.tta=yes', '--config.tta=yes',
         'Non-boolean argument', id='config.tta=yes'),
    case('train.py', '{tiny} --config.batch_size=abc',
         '--config.batch_size=abc', 'invalid literal', id='config.batch_size=abc'),
    case('train.py', '--config=configs/best.py --workdir={work} '
         '--config.model_kwargs.widths=(8,16)',
         '--config.model_kwargs.convs_per_stage: (1, 1, 2) has 3 entries for '
         '2 widths', id='convs_per_stage-per-width'),
    case('train.py', '--config=configs/best.py:s2d --workdir={work} '
         '--config.model_kwargs.downsample=stride',
         "--config.model_kwargs.downsample: unknown 'stride'; choose one of "
         'max_pool, pool_before_norm, space_to_depth', id='downsample'),
    case('train.py', '--config=configs/fast.py --workdir={work} '
         '--config.model_kwargs.padding=FULL',
         "--config.model_kwargs.padding: unknown 'FULL'; choose one of "
         'SAME, VALID', id='padding'),
    case('train.py', '--config=configs/fast.py --workdir={work} '
         '--config.data_dir={data} --config.model_kwargs.widths=(8,8,8,8)',
         "--config.model_kwargs.padding: 'VALID' leaves 1x1 pixels for "
         "convolution 3; choose 'SAME' or fewer stages",
         id='padding-valid-too-many-stages'),
    case('train.py', '{tiny} --config.batch_size=1024',
         '--config.batch_size=1024 is larger than the 512 training examples',
         id='batch-larger-than-data'),
    case('train.py', '--config={tmp}/tta_yes.py {tiny}',
         "--config.tta: must be true or false, got 'yes'",
         damage=_config_file('tta_yes', DEFAULT_CONFIG_WITHOUT.format(
             key='tta', then="config.tta = 'yes'")),
         id='config-file-tta-string'),
    case('train.py', '--config={tmp}/no_smoothing.py {tiny}',
         '--config.label_smoothing: missing from the config file',
         damage=_config_file('no_smoothing', DEFAULT_CONFIG_WITHOUT.format(
             key='label_smoothing', then='')),
         id='config-file-missing-key'),
    # ------------------------------------ train.py: config files, overrides
    *(case('train.py', f'--workdir={{work}} --config={{tmp}}/{name}.py{extra}',
           f'--config={{tmp}}/{name}.py', reason,
           damage=_config_file(name, text), id=f'config-file-{name}{extra}')
      for name, (text, reason) in CONFIG_FILES.items()
      for extra in ('', ' --config.batch_size=8')),
    *(case('train.py', f'--workdir={{work}} --config=configs/nope.py{extra}',
           '--config=configs/nope.py: ', 'No such file',
           id=f'config-file-missing{extra}')
      for extra in ('', ' --config.batch_size=8')),
    case('train.py', '--workdir={work} --config=configs/fast.py '
         '--config=configs/nope.py', '--config=configs/nope.py: ',
         'No such file', id='config-file-last-counts'),
    case('train.py', '--workdir={work} --config=configs/best.py:nope',
         '--config=configs/best.py:nope: ', "unknown variant 'nope'",
         id='config-variant'),
    case('train.py', '--workdir={work} --config.nosuch=1',
         '--config.nosuch: ' + os.path.join(cli.CONFIGS_DIR, 'default.py') +
         ' has no such key', id='key-of-default-config'),
    case('train.py', '--workdir={work} --config=configs/fast.py '
         '--config.btach_size=8',
         '--config.btach_size: configs/fast.py has no such key',
         id='key-of-config-file'),
    case('train.py', '--workdir={work} --config=configs/fast.py '
         '--config.model_kwargs.stride=2',
         '--config.model_kwargs.stride: configs/fast.py has no such key',
         id='nested-key'),
    case('train.py', '--workdir={work} --config.model_kwargs.nosuch=1',
         '--config.model_kwargs.nosuch: ', 'has no such key',
         id='nested-key-of-default-config'),
    # --------------------------------------------------- train.py: the data
    case('train.py', '{tiny} --config.data_dir={tmp}/nope',
         "data_dir '{tmp}/nope': no such folder", id='data-folder-missing'),
    case('train.py', '{tiny} --config.data_dir= --config.dataset=cifar10',
         "--config.dataset: unknown dataset 'cifar10'", id='tfds-dataset'),
    case('train.py', '{tiny}', f'{{data}}/{TRAIN_IMAGES}: bad magic number '
         '0x00000804, expected 0x00000803',
         damage=_edit_bytes('data', TRAIN_IMAGES,
                            lambda raw: raw[:3] + b'\x04' + raw[4:]),
         id='idx-bad-magic'),
    case('train.py', '{tiny}', f'{{data}}/{TRAIN_IMAGES}: truncated: header '
         'says shape (512, 28, 28)',
         damage=_edit_bytes('data', TRAIN_IMAGES, lambda raw: raw[:-100]),
         id='idx-truncated'),
    case('train.py', '{tiny}', f'{{data}}/{TRAIN_LABELS}: has trailing data',
         damage=_edit_bytes('data', TRAIN_LABELS, lambda raw: raw + b'\1\2'),
         id='idx-trailing-data'),
    case('train.py', '{tiny}', f'{{data}}/{TRAIN_IMAGES}: file too short',
         damage=_edit_bytes('data', TRAIN_IMAGES, lambda raw: b''),
         id='idx-empty'),
    case('train.py', '{tiny}', f'{{data}}/{TRAIN_IMAGES}: images are 32x32, '
         'expected 28x28',
         damage=_write_idx(TRAIN_IMAGES, np.zeros((512, 32, 32), np.uint8)),
         id='idx-image-size'),
    case('train.py', '{tiny}', f'{{data}}/{TRAIN_IMAGES} holds 512 images but '
         f'{{data}}/{TRAIN_LABELS} holds 511 labels',
         damage=_write_idx(TRAIN_LABELS, np.zeros(511, np.uint8)),
         id='idx-count-mismatch'),
    case('train.py', '{tiny}', f'{{data}}/{TRAIN_LABELS}: label 12 at record '
         '7 is outside 0-9', damage=_write_idx(TRAIN_LABELS, _labels_with(12, 7)),
         id='idx-label-range'),
    case('train.py', '{tiny}', f"data folder '{{data}}' has no {TRAIN_IMAGES} "
         f'or {TRAIN_IMAGES}.gz', damage=_remove('data', TRAIN_IMAGES),
         id='idx-file-missing'),
    case('train.py', '--workdir={work} --config.data_dir={data_gz} '
         + ' '.join(TINY_FLAGS), f'{{data_gz}}/{TEST_LABELS}.gz: corrupt or '
         'truncated gzip', damage=_edit_bytes(
             'data_gz', TEST_LABELS + '.gz', lambda raw: raw[:20]),
         id='gzip-truncated'),
    case('train.py', '--workdir={work} --config.data_dir={data_gz} '
         + ' '.join(TINY_FLAGS), f'{{data_gz}}/{TRAIN_IMAGES}.gz: corrupt or '
         'truncated gzip', damage=_edit_bytes(
             'data_gz', TRAIN_IMAGES + '.gz', lambda raw: b'not gzip at all'),
         id='gzip-not-gzip'),
    # ------------------------------------------------ train.py: the workdir
    case('train.py', '{tiny} --workdir={tmp}/a_file/work',
         "--workdir '{tmp}/a_file/work' is not a writable directory",
         damage=_write('tmp', 'a_file', 'not a folder'), id='workdir-unwritable'),
    # Read once the train state is built: slow for its first compilation.
    case('train.py', '{tiny} --workdir={tmp}/logged',
         '{tmp}/logged/metrics.jsonl: line 2 is not JSON',
         damage=_write('tmp', 'logged/metrics.jsonl',
                       '{"epoch": 1}\n{"epoch": 2, \n'),
         marks=SLOW, id='metrics-not-json'),
    *(case('train.py', '{tiny} --workdir={tmp}/logged',
           "{tmp}/logged/metrics.jsonl: line 2 is not an epoch's record",
           damage=_write('tmp', 'logged/metrics.jsonl',
                         '{"epoch": 1}\n' + line + '\n'),
           marks=SLOW, id=f'metrics-record-{line}')
      for line in ('{}', '[1, 2]', '{"epoch": "one"}',
                   '{"epoch": 2, "elapsed": null}')),
    case('train.py', '{resume} --config.learning_rate=0.5',
         '{checkpoints} holds a run of a different config (learning_rate: '
         '0.01 -> 0.5)', marks=SLOW, id='resume-other-config'),
    case('train.py', '{resume}', '{checkpoints}: checkpoint {step} is unreadable '
         '(corrupt or incomplete?): ', damage=_truncate_array_data, marks=SLOW,
         id='resume-corrupt-arrays'),
    case('train.py', '{resume}', '{checkpoints}: checkpoint {step} is unreadable '
         '(corrupt or incomplete?): ',
         damage=_write('checkpoints', '{step}/config/metadata', '{not json'),
         marks=SLOW, id='resume-garbled-config'),
    case('train.py', '{resume}', '{checkpoints}: checkpoint {step} is unreadable '
         '(corrupt or incomplete?): ',
         damage=_remove('checkpoints', '{step}/config/metadata'),
         marks=SLOW, id='resume-missing-config'),
    # -------------------------------------------------------- evaluate.py
    case('evaluate.py', '--data_dir=x', '--workdir', id='evaluate-no-workdir'),
    case('evaluate.py', '--workdir={tmp}',
         "--workdir '{tmp}': no checkpoints folder", id='evaluate-untrained'),
    case('evaluate.py', '--workdir={tmp} --data_dir={tmp}/nope',
         "--data_dir '{tmp}/nope': no such folder", id='evaluate-data-dir'),
    case('evaluate.py', '--workdir={tmp} --data_dir=',
         "--data_dir '': no such folder", id='evaluate-empty-data-dir'),
    case('evaluate.py', '--workdir={run}',
         "the data folder '{saved_data}' saved with the checkpoint in "
         "--workdir '{run}' does not exist (moved?); pass --data_dir=FOLDER",
         marks=SLOW, id='evaluate-data-moved'),
    *(case('evaluate.py', '--workdir={run} --data_dir={run_data}',
           f"--workdir '{{run}}/{name}' is a directory, not a file name",
           damage=_replace_by_folder('run', name), marks=SLOW,
           id=f'evaluate-{name}-is-a-folder')
      for name in ('predictions.csv', 'eval.json')),
    case('evaluate.py', '--workdir={run} --data_dir={run_data}',
         '{checkpoints}: checkpoint {step} is unreadable (corrupt or incomplete?): ',
         damage=_truncate_array_data, marks=SLOW, id='evaluate-corrupt-arrays'),
    case('evaluate.py', '--workdir={run} --data_dir={run_data}',
         '{checkpoints}: checkpoint {step} is unreadable (corrupt or incomplete?): ',
         damage=_write('checkpoints', '{step}/config/metadata', '{not json'),
         marks=SLOW, id='evaluate-garbled-config'),
    case('evaluate.py', '--workdir={run} --data_dir={run_data}',
         '{checkpoints}: checkpoint {step} is unreadable (corrupt or incomplete?): ',
         damage=_remove('checkpoints', '{step}/config/metadata'),
         marks=SLOW, id='evaluate-missing-config'),
    case('evaluate.py', '--workdir={run} --data_dir={run_data}',
         '{checkpoints}: checkpoint {step} does not match this model (',
         "the checkpoint has an array ['state']['batch_stats']['BatchNorm_0']"
         "['mean'] this model lacks",
         damage=_edit_saved_config(lambda config: config.update(
             model='mlp', model_kwargs={'hidden': 16})),  # cheap to compile
         marks=SLOW, id='evaluate-other-model'),
    # --------------------------------------------------------- outliers.py
    case('outliers.py', '--workdir={pred} --features=all', '--features=all',
         id='outliers-features'),
    *(case('outliers.py', f'--workdir={{pred}} --features=pixels '
           f'--data_dir={{pred_data}} {flag}', *expected, id=f'outliers{flag}')
      for flag, expected in [
          ('--contamination=0.9', ("--contamination: expected 'auto' or a "
                                   'number in (0, 0.5], got ',)),
          ('--contamination=lots', ("--contamination: expected 'auto' or a "
                                    "number in (0, 0.5], got 'lots'",)),
          ('--n_estimators=0', ('--n_estimators: must be a positive integer, '
                                'got 0',)),
          ('--seed=-1', ('--seed: must be in [0, 2**32), got -1',)),
          ('--features=embeddings --primary=pixels',
           ("--primary: 'pixels' is not among the analysed feature spaces",)),
      ]),
    case('outliers.py', '--workdir={pred} --features=pixels',
         "--workdir '{pred}': no checkpoints folder",
         id='outliers-pixels-without-data'),
    case('outliers.py', '--workdir={run} --features=pixels',
         "the data folder '{saved_data}' saved with the checkpoint in "
         "--workdir '{run}' does not exist (moved?); pass --data_dir=FOLDER",
         marks=SLOW, id='outliers-data-moved'),
    *(case('outliers.py', '--workdir={pred} --features=pixels '
           '--data_dir={pred_data}',
           f"--workdir '{{pred}}/{name}' is a directory, not a file name",
           damage=_replace_by_folder('pred', name), id=f'outliers-{name}')
      for name in ('outliers.json', figures.figure_names('pixels')['scores'])),
    *(case('outliers.py', '--workdir={pred} --features=pixels '
           '--data_dir={pred_data}', *expected, damage=damage,
           id=f'predictions-{name}')
      for name, damage, expected in [
          ('missing', _remove('pred', 'predictions.csv'),
           ('{pred}/predictions.csv: predictions file',)),
          ('empty', _write('pred', 'predictions.csv', ''),
           ('{pred}/predictions.csv: empty file',)),
          ('columns', _edit_predictions('pred', _drop_columns(
              'confidence', 'prob_3')),
           ('{pred}/predictions.csv: missing columns confidence, prob_3',)),
          ('rows', _edit_predictions('pred', lambda rows: rows.pop()),
           ('{pred}/predictions.csv has 199 rows but the test split',)),
          ('label-not-a-number', _edit_predictions(
              'pred', _set_field(3, 'label', 'x')),
           ("{pred}/predictions.csv: line 3: column label is 'x'",)),
          ('label-range', _edit_predictions(
              'pred', _set_field(2, 'label', '12')),
           ('{pred}/predictions.csv: line 2: label 12 is outside 0-9',)),
          ('probability-range', _write(
              'pred', 'predictions.csv', f'{PREDICTIONS_HEADER}\n0,0,0,1.5,'
              + ','.join(['1.5', '-0.5'] + ['0'] * 8) + '\n'),
           ('{pred}/predictions.csv: line 2: prob_0 1.5 is outside 0-1',)),
          ('other-labels', _edit_predictions('pred', _set_field(
              6, 'label', '0')),  # image 4's label is not 0 (test_outliers)
           ('{pred}/predictions.csv: column label differs from the test '
            'split', 'at 1 rows (first at line 6')),
      ]),
    case('outliers.py', '--workdir={run} --features=embeddings '
         '--data_dir={run_data}', "{run}/predictions.csv: probabilities differ "
         "from the latest checkpoint's at 1 rows (first at line 4)",
         damage=_edit_predictions('run', _shift_probability(4)), marks=SLOW,
         id='predictions-of-another-checkpoint'),
    # ---------------------------------------------------------- every script
    *(case(script, f'{args} extra words', "unexpected arguments 'extra "
           "words'; every input is a --flag", id=f'{script}-positional')
      for script, args in (('train.py', '{tiny}'),
                           ('evaluate.py', '--workdir={tmp}'),
                           ('outliers.py', '--workdir={tmp}'))),
    *(case('train.py', '{tiny}', message, env=env, id=f'distributed-{name}')
      for name, env, message in [
          ('no-process-id', [('JAX_NUM_PROCESSES', '2')],
           "environment variable JAX_PROCESS_ID='': JAX_COORDINATOR_ADDRESS "
           'is set, so it must be a non-negative integer'),
          ('processes-not-a-number', [('JAX_NUM_PROCESSES', 'two'),
                                      ('JAX_PROCESS_ID', '0')],
           "environment variable JAX_NUM_PROCESSES='two'"),
      ]),
]


@pytest.mark.parametrize('row', CASES)
def test_bad_input_is_one_line_naming_the_flag(row, tmp_path, request,
                                               monkeypatch):
  inputs = Inputs(tmp_path, request)
  args = shlex.split(row.args.format_map(inputs))
  expected = [fragment.format_map(inputs) for fragment in row.expected]
  if row.damage:
    row.damage(inputs)
  for name, value in row.env:
    monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'localhost:1')
    monkeypatch.delenv('JAX_PROCESS_ID', raising=False)
    monkeypatch.setenv(name, value)
  before = {name: snapshot(inputs[name]) for name in inputs.workdirs
            if os.path.exists(inputs[name])}

  error, _ = run_in_process(row.script, *args)

  assert error is not None, 'accepted'
  assert '\n' not in error, error
  for fragment in expected:
    assert fragment in error, error
  assert not os.path.exists(inputs['work'])  # made only for good input
  for name, entries in before.items():
    assert snapshot(inputs[name]) == entries, f'{name} changed'


# -------------------------------------------------- flag_message on its own


def test_flag_message_names_only_the_scripts_own_flags():
  with script_flags('evaluate.py', '--workdir=w'):
    assert cli.flag_message("workdir '/w': data_dir '/d' (config.data_dir)") \
        == "--workdir '/w': --data_dir '/d' (config.data_dir)"
    assert cli.flag_message('seed: bad') == 'seed: bad'  # not an evaluate flag
  with script_flags('train.py', '--workdir=w'):
    assert cli.flag_message("config.seed: bad; data_dir '/d'") == \
        "--config.seed: bad; data_dir '/d'"


def test_flag_message_leaves_paths_and_longer_names_alone():
  with script_flags('outliers.py', '--workdir=w'):
    for message in ('/runs/workdir/seed: x', 'workdirs: x', 'my_seed: x',
                    'configs/config.py: x', "'seed' x"):
      assert cli.flag_message(message) == message
    assert cli.flag_message('contamination: x; seed=3') == \
        '--contamination: x; --seed=3'


def test_script_flags_are_gone_after_the_block():
  with script_flags('outliers.py', '--workdir=w'):
    assert 'n_estimators' in flags.FLAGS
  assert 'n_estimators' not in flags.FLAGS and 'workdir' not in flags.FLAGS
