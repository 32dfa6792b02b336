"""The outlier analysis: Isolation Forest, 2x2 statistics, ranking, and
scripts/outliers.py end to end on a tiny workdir. Bad predictions.csv files
and parameters are rows of test_cli's table."""

import csv
import json
import math
import os

import numpy as np
import pytest
import scipy.stats
from scipy.stats import contingency

from mnist_jax import data as data_lib
from mnist_jax.outliers import figures
from mnist_jax.outliers import analysis as outlier_analysis
from mnist_jax.outliers import scores as outliers
from mnist_jax import predictions as predictions_io

from conftest import run_in_process

# Digit-like polylines in a unit box, one per class.
_STROKES = {
    0: [(.3, .2), (.7, .2), (.75, .5), (.7, .8), (.3, .8), (.25, .5), (.3, .2)],
    1: [(.5, .15), (.5, .85)],
    2: [(.3, .25), (.7, .25), (.7, .5), (.3, .8), (.75, .8)],
    3: [(.3, .2), (.7, .3), (.45, .5), (.7, .7), (.3, .8)],
    4: [(.65, .85), (.65, .15), (.3, .6), (.75, .6)],
    5: [(.7, .2), (.35, .2), (.3, .5), (.7, .55), (.65, .8), (.3, .8)],
    6: [(.65, .15), (.35, .5), (.35, .8), (.65, .8), (.65, .55), (.35, .55)],
    7: [(.3, .2), (.75, .2), (.45, .85)],
    8: [(.5, .5), (.3, .3), (.5, .15), (.7, .3), (.5, .5), (.3, .7), (.5, .85),
        (.7, .7), (.5, .5)],
    9: [(.65, .5), (.35, .45), (.4, .2), (.65, .25), (.65, .5), (.6, .85)],
}


def stroke_digits(labels: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
  """uint8 [N, 28, 28, 1] jittered strokes shaped like each label's digit.

  Unlike conftest's bar images these have MNIST's blank background, so noise
  and inverted images are the anomalies they are in MNIST.
  """
  yy, xx = np.mgrid[0:28, 0:28]
  t = np.linspace(0, 1, 30)[:, None, None]
  images = np.zeros((len(labels), 28, 28), np.float32)
  for i, label in enumerate(labels):
    points = np.array(_STROKES[int(label)]) * 20 + 4
    points += rng.normal(0, 1.0, points.shape)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
      distance = np.sqrt(np.min((xx - x0 - t * (x1 - x0))**2 +
                                (yy - y0 - t * (y1 - y0))**2, axis=0))
      images[i] = np.maximum(images[i], np.clip(1.8 - distance, 0, 1))
  return (images * 255).astype(np.uint8)[..., None]


def planted(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """5 inverted and 5 uniform-noise images appended to `base`."""
  inverted = 255 - base[:5]
  noise = rng.integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
  return np.concatenate([base, inverted, noise])


# ------------------------------------------------------------ isolation forest


def _assert_planted_at_top(images: np.ndarray, num_base: int) -> None:
  scores, is_outlier = outliers.isolation_forest_scores(
      outliers.pixel_features(images))
  lowest = set(np.argsort(scores)[:10].tolist())
  assert lowest == set(range(num_base, num_base + 10))
  assert is_outlier[num_base:].all()
  assert scores[num_base:].max() < np.quantile(scores[:num_base], 0.01)
  np.testing.assert_array_equal(is_outlier, scores < 0)


def test_planted_outliers_top_stroke_digits():
  rng = np.random.default_rng(0)
  base = stroke_digits(rng.integers(0, 10, 1000), rng)
  _assert_planted_at_top(planted(base, rng), 1000)


def test_planted_outliers_top_real_mnist(mnist_dir):
  base = data_lib.load_idx_split(mnist_dir, 'test').images[:2000]
  _assert_planted_at_top(planted(base, np.random.default_rng(0)), 2000)


def test_blank_image_is_not_a_pixel_outlier(mnist_dir):
  """The documented blind spot: zero ink is what most pixels of most MNIST
  digits have, so a blank image is among the most normal in pixel space."""
  base = data_lib.load_idx_split(mnist_dir, 'test').images[:2000]
  images = np.concatenate([base, np.zeros((1, 28, 28, 1), np.uint8)])
  scores, is_outlier = outliers.isolation_forest_scores(
      outliers.pixel_features(images))
  assert not is_outlier[-1]
  assert scores[-1] > np.quantile(scores[:-1], 0.99)


def test_fit_on_other_set_and_contamination():
  rng = np.random.default_rng(2)
  fit = outliers.pixel_features(stroke_digits(rng.integers(0, 10, 400), rng))
  test = outliers.pixel_features(planted(
      stroke_digits(rng.integers(0, 10, 190), rng), rng))
  scores, is_outlier = outliers.isolation_forest_scores(
      test, fit, contamination=0.1, seed=3)
  assert set(np.argsort(scores)[:10].tolist()) == set(range(190, 200))
  # The threshold is the 10% quantile of the *fitting* set's scores.
  _, fit_outlier = outliers.isolation_forest_scores(
      fit, fit, contamination=0.1, seed=3)
  assert fit_outlier.sum() == 40
  assert np.all(is_outlier == (scores < 0))
  again, _ = outliers.isolation_forest_scores(test, fit, contamination=0.1,
                                              seed=3)
  np.testing.assert_array_equal(scores, again)


# ------------------------------------------------------------------ statistics


def _hand_example() -> tuple[np.ndarray, np.ndarray]:
  """20 images: 4 misclassified (3 outliers), 16 correct (2 outliers)."""
  misclassified = np.array([1] * 4 + [0] * 16, bool)
  is_outlier = np.array([1, 1, 1, 0] + [1, 1] + [0] * 14, bool)
  return misclassified, is_outlier


def test_contingency_table_and_rates_hand_example():
  table = outliers.contingency_table(*_hand_example())
  np.testing.assert_array_equal(table, [[3, 1], [2, 14]])
  stats = outliers.table_statistics(table)
  assert (stats['num_images'], stats['num_misclassified'],
          stats['num_correct'], stats['num_outliers']) == (20, 4, 16, 5)
  assert stats['outlier_rate_misclassified'] == 0.75
  assert stats['outlier_rate_correct'] == 0.125
  assert stats['outlier_rate'] == 0.25
  assert stats['misclassification_rate'] == 0.2
  assert stats['misclassification_rate_outliers'] == 0.6
  assert stats['misclassification_rate_inliers'] == 1 / 15
  assert stats['expected_misclassified_outliers_if_independent'] == 1.0
  assert stats['odds_ratio_sample'] == 21.0  # (3 * 14) / (1 * 2)


def test_fisher_p_values_by_hand():
  stats = outliers.table_statistics(np.array([[3, 1], [2, 14]]))
  # Hypergeometric: 20 images, 5 outliers, 4 misclassified; P(X >= 3).
  total = math.comb(20, 4)
  p_greater = (math.comb(5, 3) * math.comb(15, 1) +
               math.comb(5, 4) * math.comb(15, 0)) / total
  assert p_greater == pytest.approx(155 / 4845)
  assert stats['p_greater'] == pytest.approx(p_greater, rel=1e-12)
  # No lower-tail table is as unlikely as the observed one (P(X=0) = 1365/4845).
  assert stats['p_two_sided'] == pytest.approx(p_greater, rel=1e-12)


@pytest.mark.parametrize('table', [[[3, 1], [2, 14]], [[20, 77], [400, 9503]],
                                   [[1, 40], [300, 2000]], [[5, 0], [10, 100]]])
def test_odds_ratio_and_p_values_match_scipy(table):
  stats = outliers.table_statistics(np.array(table))
  (a, b), (c, d) = table
  expected = contingency.odds_ratio(np.array(table))
  interval = expected.confidence_interval(0.95)
  assert stats['odds_ratio'] == pytest.approx(expected.statistic)
  assert stats['odds_ratio_ci95'] == pytest.approx(
      [interval.low, interval.high])
  sample = a * d / (b * c) if b * c else math.inf
  assert stats['odds_ratio_sample'] == pytest.approx(sample)
  assert stats['p_two_sided'] == pytest.approx(
      scipy.stats.fisher_exact(table).pvalue)
  assert stats['p_greater'] == pytest.approx(
      scipy.stats.fisher_exact(table, alternative='greater').pvalue)


def test_odds_ratio_known_value():
  stats = outliers.table_statistics(np.array([[20, 77], [400, 9503]]))
  assert stats['odds_ratio_sample'] == pytest.approx(20 * 9503 / (77 * 400))
  assert stats['odds_ratio'] == pytest.approx(6.1682, abs=1e-3)
  assert stats['odds_ratio_ci95'] == pytest.approx([3.5346, 10.3157], abs=1e-3)
  assert stats['p_two_sided'] == pytest.approx(2.5555e-09, rel=1e-3)


def test_answer_sentence():
  stats = outliers.table_statistics(np.array([[20, 77], [400, 9503]]))
  assert outliers.answer_sentence(stats) == (
      '97 of 10,000 test images were misclassified; 20 of them (20.6%) are '
      'outliers, against 4.0% of correctly classified images (odds ratio '
      '6.17, p = 2.6e-09).')
  stats = outliers.table_statistics(np.array([[1200, 300], [2000, 6500]]))
  assert outliers.answer_sentence(stats).startswith(
      '1,500 of 10,000 test images were misclassified; 1,200 of them (80.0%) '
      'are outliers, against 23.5% of correctly classified images (odds ratio ')


def test_per_class_statistics():
  labels = np.array([0] * 10 + [1] * 10)
  misclassified = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0] +
                           [1, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)
  is_outlier = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0] +
                        [0, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
  per_class = outliers.per_class_statistics(labels, misclassified, is_outlier)
  assert [c['label'] for c in per_class] == list(range(10))
  assert per_class[0]['table'] == [[1, 1], [1, 7]]
  assert per_class[1]['table'] == [[0, 1], [3, 6]]
  assert per_class[2]['num_images'] == 0
  assert math.isnan(per_class[2]['odds_ratio'])


def test_score_separation_matches_pair_count():
  rng = np.random.default_rng(4)
  scores = np.round(rng.normal(size=60), 1)  # ties on purpose
  misclassified = np.zeros(60, bool)
  misclassified[:12] = True
  scores[:12] -= 0.5
  bad, good = scores[:12], scores[12:]
  pairs = (bad[:, None] < good[None, :]) + 0.5 * (bad[:, None] == good[None, :])
  result = outliers.score_separation(scores, misclassified)
  assert result['auc'] == pytest.approx(pairs.mean())
  assert result['p_less'] == pytest.approx(scipy.stats.mannwhitneyu(
      bad, good, alternative='less').pvalue)
  assert result['auc'] > 0.5


# --------------------------------------------------------------------- ranking


def _ranking_example() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """200 images: confident correct ones, honest mistakes and one planted
  label error (image of an 8, labelled 3, model 0.999 sure of 8) whose
  outlier score is only middling."""
  rng = np.random.default_rng(5)
  n = 200
  labels = rng.integers(0, 10, n)
  probabilities = np.full((n, 10), 0.001)
  probabilities[np.arange(n), labels] = 0.991
  for i in range(10):  # honest mistakes: spread between label and another class
    other = (labels[i] + 1) % 10
    probabilities[i] = 0.01
    probabilities[i, other], probabilities[i, labels[i]] = 0.55, 0.37
  planted_index = 100
  labels[planted_index] = 3
  probabilities[planted_index] = 0.0001
  probabilities[planted_index, 8] = 0.9991
  scores = rng.normal(0.05, 0.03, n)
  scores[planted_index] = np.median(scores)
  scores[0] = -0.3  # the most anomalous image is an honest mistake
  scores[150] = -0.25  # a very anomalous image the model agrees with
  return labels, probabilities, scores, planted_index


def test_ranking_puts_planted_label_error_first():
  labels, probabilities, scores, planted_index = _ranking_example()
  ranking = outliers.label_error_candidates(labels, probabilities, scores)
  assert ranking['rank'][planted_index] == 1
  np.testing.assert_array_equal(np.sort(ranking['rank']), np.arange(1, 201))
  # Next come the ten honest mistakes, then the images the model agrees with.
  assert set(np.flatnonzero(ranking['rank'] <= 11)) == set(range(10)) | {100}
  assert ranking['rank'][0] == 2  # the most anomalous of the mistakes
  assert ranking['rank'][150] == 12  # the most anomalous correct image
  assert ranking['p_label'][planted_index] == pytest.approx(0.0001)
  assert ranking['margin'][planted_index] == pytest.approx(0.999)
  assert ranking['outlierness'][0] == 1.0
  expected = ((1 - 0.0001 + 0.999) / 2 +
              0.25 * ranking['outlierness'][planted_index])
  assert ranking['suspicion'][planted_index] == pytest.approx(expected)


def test_outlierness_is_percentile_of_anomaly():
  np.testing.assert_allclose(outliers.outlierness(np.array([0.1, -0.2, 0.0])),
                             [0.0, 1.0, 0.5])


# ------------------------------------------------------------ tiny workdir


def write_tiny_workdir(tmp_path, num_test=200, num_train=300):
  """A data folder of synthetic IDX files and a workdir with predictions.csv
  (no checkpoint).

  Image 7 is an 8 labelled 3 that the "model" is sure is an 8; images 0-9
  (except 7) are honest mistakes.
  """
  rng = np.random.default_rng(6)
  data_dir = tmp_path / 'data'
  data_dir.mkdir()
  true_labels = rng.integers(0, 10, num_test)
  true_labels[7] = 8
  images = stroke_digits(true_labels, rng)
  labels = true_labels.copy()
  labels[7] = 3
  train_labels = rng.integers(0, 10, num_train)
  for split, split_images, split_labels in (
      ('test', images, labels),
      ('train', stroke_digits(train_labels, rng), train_labels)):
    images_name, labels_name = data_lib.idx_filenames(split)
    data_lib.write_idx(str(data_dir / images_name), split_images[..., 0])
    data_lib.write_idx(str(data_dir / labels_name), split_labels)
  probabilities = np.full((num_test, 10), 0.002)
  probabilities[np.arange(num_test), true_labels] = 0.982
  for i in (0, 1, 2, 3, 4, 5, 6, 8, 9):
    probabilities[i] = 0.01
    probabilities[i, (labels[i] + 1) % 10] = 0.6
    probabilities[i, labels[i]] = 0.32
  workdir = tmp_path / 'work'
  workdir.mkdir()
  split = data_lib.Split(images=images, labels=labels.astype(np.int32),
                         index=np.arange(num_test, dtype=np.int64))
  (workdir / 'predictions.csv').write_text(
      predictions_io.predictions_csv(split, probabilities))
  return workdir, data_dir, split


def _figure_names(summary) -> set[str]:
  """Every figure file named in outliers.json (by detector, by kind)."""
  names = set()
  for by_kind in summary['figures'].values():
    names.update(by_kind.values())
  return names


@pytest.mark.slow
def test_outliers_py_end_to_end_on_pixels(tmp_path):
  workdir, data_dir, split = write_tiny_workdir(tmp_path)
  error, stdout = run_in_process('outliers.py', f'--workdir={workdir}',
                                 '--features=pixels', f'--data_dir={data_dir}')
  assert error is None, error

  predictions = predictions_io.read_predictions(
      str(workdir / 'predictions.csv'))
  scores, is_outlier = outliers.isolation_forest_scores(
      outliers.pixel_features(split.images))
  misclassified = predictions.predictions != predictions.labels
  assert misclassified.sum() == 10
  table = outliers.contingency_table(misclassified, is_outlier)
  answer = outliers.answer_sentence(outliers.table_statistics(table))
  assert answer.startswith('10 of 200 test images were misclassified; ')
  assert f'pixels: {answer}' in stdout
  assert 'outlier analysis took' in stdout

  summary = json.loads((workdir / 'outliers.json').read_text())
  pixels = summary['analyses']['pixels']
  assert pixels['overall']['table'] == table.tolist()
  assert pixels['answer'] == answer
  assert summary['primary_feature_space'] == 'pixels'
  assert summary['parameters']['n_estimators'] == 100
  assert summary['parameters']['max_samples'] == 256
  assert summary['parameters']['contamination'] == 0.05
  assert summary['parameters']['fit_on'] == 'test'
  assert sum(c['num_images'] for c in pixels['per_class']) == 200
  assert pixels['top_label_error_candidates'][0]['index'] == 7

  with open(workdir / 'outliers.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == outlier_analysis.OUTLIER_COLUMNS
  assert [int(r['index']) for r in rows] == list(range(200))
  ranks = {int(r['rank']): int(r['index']) for r in rows}
  assert ranks[1] == 7 and sorted(ranks) == list(range(1, 201))
  np.testing.assert_allclose([float(r['if_score']) for r in rows], scores,
                             atol=1e-6)
  assert [int(r['is_outlier']) for r in rows] == is_outlier.astype(int).tolist()
  assert ([int(r['correct']) for r in rows] ==
          (~misclassified).astype(int).tolist())

  markdown = (workdir / 'report.md').read_text()
  assert answer in markdown
  figures_named = _figure_names(summary)
  for name in figures_named:
    assert f']({name})' in markdown
    assert (workdir / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  written = {name for name in os.listdir(workdir) if name != 'predictions.csv'
             and not name.startswith('.')}
  assert written == set(outlier_analysis.TABLE_AND_REPORT_NAMES) | figures_named


@pytest.mark.slow
def test_fit_on_train_and_contamination(tmp_path):
  workdir, data_dir, _ = write_tiny_workdir(tmp_path)
  summary = outlier_analysis.run_outlier_analysis(
      str(workdir), features='pixels', fit_on='train', contamination='0.1',
      data_dir=str(data_dir), seed=1)
  assert summary['parameters']['fit_on'] == 'train'
  assert summary['parameters']['num_fit_images'] == 300
  assert summary['parameters']['contamination'] == 0.1
  overall = summary['analyses']['pixels']['overall']
  assert overall['num_images'] == 200
  assert overall['num_misclassified'] == 10
  # Fitted on 300 other images of the same kind: about 10% flagged.
  assert 5 <= overall['num_outliers'] <= 40


@pytest.mark.filterwarnings('error')  # zero-width bins: division by zero, empty plot
def test_score_histogram_of_equal_scores(tmp_path):
  """IsolationForest gives every image the same score when all images are
  the same; the histogram must still have bars."""
  path = tmp_path / 'scores.png'
  figures.score_histogram(str(path), np.full(20, -0.1),
                          np.arange(20) % 4 == 0, 'equal scores')
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
