"""Class-conditional outlier detectors and the statistics stratified by class."""

import math

import numpy as np
import pytest
import scipy.stats

from mnist_jax.outliers import analysis
from mnist_jax.outliers import conditional
from mnist_jax.outliers import scores as outliers
from mnist_jax.outliers import stratified

# Three strata [[misclassified outliers, misclassified inliers],
#               [correct outliers, correct inliers]].
TABLES = np.array([[[3, 7], [20, 170]],
                   [[1, 9], [8, 182]],
                   [[4, 2], [30, 64]]])


# ------------------------------------------------------------ stratified tests


def test_mantel_haenszel_by_hand():
  odds_ratio = (3 * 170 / 200 + 1 * 182 / 200 + 4 * 64 / 100) / (
      7 * 20 / 200 + 9 * 8 / 200 + 2 * 30 / 100)
  expected = 10 * 23 / 200 + 10 * 9 / 200 + 6 * 34 / 100  # 3.64
  variance = (10 * 190 * 23 * 177 / (200**2 * 199) +
              10 * 190 * 9 * 191 / (200**2 * 199) +
              6 * 94 * 34 * 66 / (100**2 * 99))
  result = stratified.mantel_haenszel(TABLES)
  assert expected == pytest.approx(3.64)
  assert result['expected_misclassified_outliers'] == pytest.approx(expected)
  assert result['observed_misclassified_outliers'] == 8
  assert result['odds_ratio_mh'] == pytest.approx(odds_ratio)
  assert result['cmh_statistic'] == pytest.approx(
      (abs(8 - expected) - 0.5)**2 / variance)
  uncorrected = stratified.mantel_haenszel(TABLES, correction=False)
  assert uncorrected['cmh_statistic'] == pytest.approx((8 - expected)**2 / variance)
  assert result['p_cmh'] == pytest.approx(
      scipy.stats.chi2.sf(result['cmh_statistic'], 1))


def test_mantel_haenszel_matches_statsmodels():
  """Reference values from statsmodels 0.15.0, StratifiedTable(TABLES):
  oddsratio_pooled, oddsratio_pooled_confint(), test_null_odds()."""
  result = stratified.mantel_haenszel(TABLES)
  assert result['odds_ratio_mh'] == pytest.approx(3.626506024096385, rel=1e-12)
  assert result['odds_ratio_mh_ci95'] == pytest.approx(
      [1.353801956836207, 9.714527207171512], rel=1e-9)
  assert result['cmh_statistic'] == pytest.approx(5.60043715219447, rel=1e-12)
  assert result['p_cmh'] == pytest.approx(0.017955996595367174, rel=1e-9)
  uncorrected = stratified.mantel_haenszel(TABLES, correction=False)
  assert uncorrected['cmh_statistic'] == pytest.approx(7.1452971951163775,
                                                       rel=1e-12)


@pytest.mark.parametrize('table', [[[3, 1], [2, 14]], [[20, 77], [400, 9503]],
                                   [[1, 40], [300, 2000]], [[0, 5], [10, 100]]])
def test_one_stratum_is_fisher_and_pearson(table):
  table = np.array(table)
  exact = stratified.exact_test(table[None])
  assert exact['p_exact'] == pytest.approx(
      scipy.stats.fisher_exact(table).pvalue, rel=1e-9)
  assert exact['p_exact_greater'] == pytest.approx(
      scipy.stats.fisher_exact(table, alternative='greater').pvalue, rel=1e-9)
  # Without the continuity correction, CMH = Pearson's chi-square * (n-1)/n.
  n = table.sum()
  pearson = scipy.stats.chi2_contingency(table, correction=False).statistic
  assert stratified.mantel_haenszel(table[None], correction=False)[
      'cmh_statistic'] == pytest.approx(pearson * (n - 1) / n)


def test_exact_test_by_enumeration():
  """Two small strata: every way the outliers could fall, by hand."""
  tables = np.array([[[2, 1], [1, 4]], [[1, 1], [0, 3]]])
  strata = []  # P(a) for each stratum: hypergeometric with its margins
  for (a, b), (c, d) in tables.tolist():
    rows, columns, n = a + b, a + c, a + b + c + d
    strata.append({x: math.comb(columns, x) * math.comb(n - columns, rows - x) /
                   math.comb(n, rows) for x in range(0, min(rows, columns) + 1)})
  total = {}
  for x, p in strata[0].items():
    for y, q in strata[1].items():
      total[x + y] = total.get(x + y, 0) + p * q
  observed = total[3]
  expected_two_sided = sum(p for p in total.values() if p <= observed * (1 + 1e-7))
  expected_greater = sum(p for s, p in total.items() if s >= 3)
  result = stratified.exact_test(tables)
  assert result['p_exact'] == pytest.approx(expected_two_sided)
  assert result['p_exact_greater'] == pytest.approx(expected_greater)
  low, pmf = stratified.exact_null_distribution(tables)
  assert low == min(total) and pmf.sum() == pytest.approx(1)


def test_stratifying_removes_a_class_confound():
  """Class 0: many errors and many outliers; class 1: few of both; no
  association inside either class. Pooled, the table says yes; by class, no."""
  labels = np.repeat([0, 1], 1000)
  misclassified = np.zeros(2000, bool)
  is_outlier = np.zeros(2000, bool)
  misclassified[0:200] = True  # class 0: 20% errors; 30% outliers among
  is_outlier[0:60] = True  # the errors (60 of 200)
  is_outlier[200:440] = True  # and among the correct (240 of 800)
  misclassified[1000:1010] = True  # class 1: 1% errors, 1% outliers
  is_outlier[1010:1020] = True  # among the correct, none among the errors
  pooled = outliers.table_statistics(
      outliers.contingency_table(misclassified, is_outlier))
  by_class = stratified.stratified_statistics(labels, misclassified, is_outlier)
  assert pooled['odds_ratio'] > 2 and pooled['p_two_sided'] < 1e-5
  assert by_class['odds_ratio_mh'] == pytest.approx(1.0, abs=0.05)
  assert by_class['p_exact'] > 0.5


def test_class_and_ink_strata():
  labels = np.array([0] * 10 + [1] * 5)
  ink = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0] + [5, 1, 3, 2, 4], float)
  strata = stratified.class_and_ink_strata(labels, ink, bins=5)
  np.testing.assert_array_equal(
      strata, [4, 4, 3, 3, 2, 2, 1, 1, 0, 0] + [9, 5, 7, 6, 8])


def test_benjamini_hochberg():
  per_class = [{'p_two_sided': p} for p in (0.01, 0.04, 0.03, 0.5)]
  adjusted = [c['p_two_sided_bh'] for c in
              stratified.with_adjusted_p_values(per_class)]
  # Sorted 0.01, 0.03, 0.04, 0.5: p * 4 / rank, then the running minimum
  # from the top.
  assert adjusted == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


# ------------------------------------------------------------------ detectors


def _clusters(labels, seed):
  """Class k: a unit Gaussian in the plane around angle 36k degrees on the
  circle of radius 10."""
  angles = np.deg2rad(36 * labels)
  centers = 10 * np.stack([np.cos(angles), np.sin(angles)], -1)
  return np.random.default_rng(seed).normal(size=(len(labels), 2)) + centers


def test_forest_per_class_flags_an_image_of_another_class():
  rng = np.random.default_rng(0)
  train_labels = np.repeat(np.arange(10), 200)
  train = _clusters(train_labels, 1)
  test_labels = rng.integers(0, 10, 200)
  test = _clusters(test_labels, 2)
  wrong = (test_labels + 3) % 10  # every image scored against another class
  forests = conditional.class_forests(train, train_labels, n_estimators=30,
                                      max_samples=64, contamination=0.05,
                                      seed=0)
  own, own_outlier = conditional.class_forest_scores(forests, test, test_labels)
  other, other_outlier = conditional.class_forest_scores(forests, test, wrong)
  assert other_outlier.mean() > 0.9 and own_outlier.mean() < 0.1
  assert (other < own).all()
  # Each forest's threshold is its own class's 5% quantile: 10 of 200.
  _, flagged = conditional.class_forest_scores(forests, train, train_labels)
  np.testing.assert_array_equal(np.bincount(train_labels[flagged]), [10] * 10)


def test_knn_distances_by_hand():
  # Unit vectors at angles 0, 10, 20 and 90 degrees: cosine distance 1 - cos.
  angles = np.deg2rad([0, 10, 20, 90])
  points = np.stack([np.cos(angles), np.sin(angles)], -1)
  scores, is_outlier, details = conditional.knn_scores(
      points, k=2, contamination=0.25, seed=0)
  d = lambda a, b: 1 - math.cos(math.radians(a - b))
  own = np.array([(d(0, 10) + d(0, 20)) / 2, (d(10, 0) + d(10, 20)) / 2,
                  (d(20, 10) + d(20, 0)) / 2, (d(90, 20) + d(90, 10)) / 2])
  scale = np.median(own)
  np.testing.assert_allclose(scores, np.exp(-own / scale), rtol=1e-6)
  assert details['median_reference_distance'] == pytest.approx(scale)
  np.testing.assert_array_equal(is_outlier, [False, False, False, True])


def test_knn_against_a_reference_set():
  rng = np.random.default_rng(1)
  reference = rng.normal(size=(500, 8)) + 5
  queries = np.concatenate([rng.normal(size=(50, 8)) + 5, -reference[:3]])
  scores, is_outlier, details = conditional.knn_scores(
      queries, reference, k=10, contamination=0.05, seed=0)
  assert is_outlier[-3:].all() and is_outlier[:50].mean() < 0.2
  assert scores[-3:].max() < scores[:50].min()
  assert details['k'] == 10


# -------------------------------------------------------------------- answers


def _analysis(misclassified_outliers, p_exact, odds):
  return {
      'description': 'a detector',
      'overall': {'misclassified_outliers': misclassified_outliers,
                  'num_misclassified': 52,
                  'outlier_rate_misclassified': misclassified_outliers / 52,
                  'outlier_rate_correct': 0.043},
      'stratified': {'p_exact': p_exact, 'odds_ratio_mh': odds,
                     'odds_ratio_mh_ci95': [odds / 2, odds * 2]},
  }


def test_verdict_follows_the_stratified_test():
  assert analysis.verdict(_analysis(13, 2.9e-7, 7.3)) == (
      'Yes, more often than chance within their class (a detector): 13 of 52 '
      'misclassified test images (25.0%) are outliers, against 4.3% of '
      'correctly classified ones; stratified by class, Mantel-Haenszel odds '
      'ratio 7.3 (95% CI 3.65 to 14.6), exact p = 2.9e-07.')
  assert analysis.verdict(_analysis(2, 0.4, 1.2)).startswith(
      'No more often than chance within their class')
  assert analysis.verdict(_analysis(0, 0.01, 0.0)).startswith(
      'No: less often than chance within their class')
