"""report.md: the accuracy section, calibration, empty sets, and the dataset
named from the data actually used."""

import json
import os

import numpy as np
import pytest

from mnist_jax import data as data_lib
from mnist_jax import predictions as predictions_lib
from mnist_jax.outliers import accuracy
from mnist_jax.outliers import analysis
from mnist_jax.outliers import conditional
from mnist_jax.outliers import figures
from mnist_jax.outliers import scores as outliers

from conftest import run_in_process, write_idx_folder

FASHION_DIR = '/usr/share/datasets/fashion-mnist'
PNG = b'\x89PNG\r\n\x1a\n'


def test_reliability_and_ece_by_hand():
  confidence = np.array([0.95, 0.95, 0.55, 0.62, 0.99])
  correct = np.array([True, False, True, False, True])
  result = accuracy.reliability(confidence, correct)
  # 15 bins of width 1/15: 0.55 in (8/15, 9/15], 0.62 in (9/15, 10/15], the
  # rest in (14/15, 1].
  assert [(b['low'] * 15, b['count']) for b in result['bins']] == [
      pytest.approx((8, 1)), pytest.approx((9, 1)), pytest.approx((14, 3))]
  top = result['bins'][-1]
  assert top['accuracy'] == pytest.approx(2 / 3)
  assert top['confidence'] == pytest.approx((0.95 + 0.95 + 0.99) / 3)
  expected = (3 * abs(2 / 3 - 2.89 / 3) + abs(1 - 0.55) + abs(0 - 0.62)) / 5
  assert result['ece'] == pytest.approx(expected)
  assert expected == pytest.approx(0.392)


# ------------------------------------------------------------ tiny workdir


def _workdir(tmp_path, wrong=(3, 17, 42), with_metrics=True):
  """Synthetic IDX data (300 training, 200 test images) and a workdir with
  predictions.csv (the images in `wrong` misclassified) and metrics.jsonl."""
  data_dir = write_idx_folder(tmp_path / 'idx', num_train=300, num_test=200)
  test = data_lib.load_idx_split(data_dir, 'test')
  probabilities = np.full((200, 10), 0.01)
  probabilities[np.arange(200), test.labels] = 0.91
  for i in wrong:
    probabilities[i] = 0.01
    probabilities[i, (test.labels[i] + 1) % 10] = 0.91
  workdir = tmp_path / 'work'
  workdir.mkdir()
  (workdir / 'predictions.csv').write_text(
      predictions_lib.predictions_csv(test, probabilities))
  if with_metrics:
    (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(
        {'epoch': e, 'train_loss': 1 / e, 'train_accuracy': 1 - 0.1 / e,
         'test_loss': 1.1 / e, 'test_accuracy': 1 - 0.11 / e,
         'elapsed': float(e)}) + '\n' for e in (1, 2, 3)))
  return str(workdir), data_dir, test


def _figure_links(markdown):
  return [line[line.index('](') + 2:-1] for line in markdown.splitlines()
          if line.startswith('![')]


@pytest.mark.slow
def test_report_sections_figures_and_class_conditional_tables(tmp_path):
  workdir, data_dir, test = _workdir(tmp_path)
  summary = analysis.run_outlier_analysis(workdir, features='pixels',
                                          data_dir=data_dir, n_estimators=20)
  markdown = open(os.path.join(workdir, 'report.md')).read()
  headings = [line for line in markdown.splitlines() if line.startswith('#')]
  order = ['## Answer', '## Accuracy', '### Training curves',
           '### Confusion matrix', '### Per-class accuracy',
           '### Misclassified test images', '### Calibration',
           '## Outliers: every detector', '## Method', '## Pooled pixel forest']
  assert [h for h in headings if h in order] == order
  assert headings[0].startswith('# Unrecognised IDX files: ')
  for name in _figure_links(markdown):
    with open(os.path.join(workdir, name), 'rb') as f:
      assert f.read(8) == PNG, name
  for name in figures.ACCURACY_FIGURES.values():
    assert f']({name})' in markdown
  assert summary['accuracy']['num_misclassified'] == 3
  assert summary['accuracy']['confusion_matrix'][test.labels[3]][
      (test.labels[3] + 1) % 10] >= 1
  assert summary['accuracy']['reliability']['ece'] == pytest.approx(0.075)
  assert list(summary['analyses']) == ['pixels', 'pixels_by_label',
                                       'pixels_by_prediction']
  assert summary['answer_detector'] == 'pixels_by_label'
  assert summary['answer'] in markdown
  assert summary['ink_confound']['sentence'] in markdown
  # The class-conditional table is the one its forests give.
  train = data_lib.load_idx_split(data_dir, 'train')
  forests = conditional.class_forests(
      outliers.pixel_features(train.images), train.labels, n_estimators=20,
      max_samples=256, contamination=0.05, seed=0)
  _, is_outlier = conditional.class_forest_scores(
      forests, outliers.pixel_features(test.images), test.labels)
  misclassified = np.isin(np.arange(200), (3, 17, 42))
  by_label = summary['analyses']['pixels_by_label']
  assert by_label['overall']['table'] == outliers.contingency_table(
      misclassified, is_outlier).tolist()
  assert set(by_label['stratified']) >= {'odds_ratio_mh', 'p_cmh', 'p_exact'}
  assert all('p_two_sided_bh' in c for c in by_label['per_class'])


@pytest.mark.slow
def test_no_misclassified_image_is_a_sentence_not_a_picture(tmp_path):
  workdir, data_dir, _ = _workdir(tmp_path, wrong=(), with_metrics=False)
  stale = os.path.join(workdir, 'misclassified.png')
  with open(stale, 'wb') as f:
    f.write(PNG)  # from an earlier run
  analysis.run_outlier_analysis(workdir, features='pixels', data_dir=data_dir,
                                n_estimators=20)
  markdown = open(os.path.join(workdir, 'report.md')).read()
  assert 'No test image is misclassified.' in markdown
  assert 'No metrics.jsonl in the workdir: no training curves.' in markdown
  assert 'No misclassified image is an outlier for this detector.' in markdown
  assert not os.path.exists(stale)
  assert not os.path.exists(os.path.join(workdir, 'training_curves.png'))
  assert sorted(_figure_links(markdown)) == sorted(
      name for name in os.listdir(workdir) if name.endswith('.png'))


# ------------------------------------------------------------------ datasets


@pytest.fixture(scope='module')
def fashion_dir():
  if not os.path.isdir(FASHION_DIR):
    pytest.skip(f'{FASHION_DIR} not found (apt-get install dataset-fashion-mnist)')
  return FASHION_DIR


def test_datasets_are_told_apart_by_their_labels(mnist_dir, fashion_dir,
                                                 tiny_idx_dir):
  assert data_lib.identify(data_lib.load_idx_split(mnist_dir, 'test')) == 'mnist'
  assert data_lib.identify(
      data_lib.load_idx_split(fashion_dir, 'test')) == 'fashion_mnist'
  assert data_lib.identify(data_lib.load_idx_split(tiny_idx_dir, 'test')) is None


def test_a_folder_of_another_dataset_is_refused(mnist_dir, tmp_path):
  error, _ = run_in_process('train.py', f'--workdir={tmp_path / "w"}',
                            f'--config.data_dir={mnist_dir}',
                            '--config.dataset=fashion_mnist')
  assert error == (f"--config.dataset='fashion_mnist', but --config.data_dir "
                   f"'{mnist_dir}' holds MNIST (its labels are those of the "
                   'published files); set --config.dataset=mnist')
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_fashion_mnist_report_is_titled_and_labelled(fashion_dir, tmp_path):
  test = data_lib.load_idx_split(fashion_dir, 'test')
  probabilities = np.full((len(test), 10), 0.01)
  probabilities[np.arange(len(test)), test.labels] = 0.91
  probabilities[0] = np.roll(probabilities[0], 1)  # an Ankle boot as a T-shirt
  workdir = tmp_path / 'work'
  workdir.mkdir()
  (workdir / 'predictions.csv').write_text(
      predictions_lib.predictions_csv(test, probabilities))
  summary = analysis.run_outlier_analysis(str(workdir), features='pixels',
                                          data_dir=fashion_dir, n_estimators=10)
  markdown = (workdir / 'report.md').read_text()
  assert markdown.startswith('# Fashion-MNIST: ')
  assert summary['dataset'] == 'fashion_mnist'
  assert summary['class_names'][9] == 'Ankle boot'
  assert '| Ankle boot | 1,000 | 999 | 99.9% | T-shirt/top (1) |' in markdown


@pytest.mark.slow
def test_eval_json_names_the_data(trained_run):
  with open(os.path.join(trained_run.workdir, 'eval.json')) as f:
    summary = json.load(f)
  assert summary['dataset'] == 'mnist'
  assert summary['data_source'] == trained_run.data_dir
