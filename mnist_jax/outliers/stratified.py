"""Misclassified x outlier, stratified by class.

A detector whose outlier rate differs between classes (the pooled pixel
forest flags zeros far more often than ones) and a model whose error rate
differs between classes make a pooled 2x2 table show an association that
is only "which class". Stratifying by the true class removes it:

- the Mantel-Haenszel common odds ratio with the Robins-Breslow-Greenland
  95% confidence interval;
- the Cochran-Mantel-Haenszel test (chi-square, 1 degree of freedom, with
  the continuity correction, as R's mantelhaen.test);
- its exact version: given every class's margins, the number of
  misclassified outliers is a sum of independent hypergeometric variables,
  whose distribution is their convolution (two-sided p as Fisher's: the
  probability of every total no more likely than the observed one);
- per-class Fisher p-values adjusted for the ten tests with
  Benjamini-Hochberg (scipy.stats.false_discovery_control).

Stratifying by class and by ink quintile within the class as well removes
what total ink explains inside a class (a thick 1 is unusual for a 1).

Tables are [[misclassified outliers, misclassified inliers],
[correct outliers, correct inliers]], one per stratum, as in scores.py.
"""

from typing import Any

import numpy as np
import scipy.stats

from mnist_jax.outliers import scores as outliers

METHOD = (
    'stratified by true class: Mantel-Haenszel common odds ratio (95% CI of '
    'Robins, Breslow & Greenland), Cochran-Mantel-Haenszel chi-square test '
    '(continuity-corrected) and its exact conditional version (convolution '
    "of the classes' hypergeometric distributions); per-class Fisher "
    'p-values adjusted by Benjamini-Hochberg')
_TIES = 1 + 1e-7  # relative tolerance for equal pmf values, as fisher_exact's
INK_BINS = 5
_Z_95 = scipy.stats.norm.ppf(0.975)


def tables_by_stratum(strata: np.ndarray, misclassified: np.ndarray,
                      is_outlier: np.ndarray) -> np.ndarray:
  """[S, 2, 2] tables, one per distinct value of `strata`, in sorted order."""
  return np.stack([outliers.contingency_table(misclassified[strata == s],
                                              is_outlier[strata == s])
                   for s in np.unique(strata)])


def mantel_haenszel(tables: np.ndarray,
                    correction: bool = True) -> dict[str, Any]:
  """MH odds ratio with its CI and the CMH test of [S, 2, 2] `tables`.

  Strata of fewer than two images carry no information and are left out.
  """
  tables = np.asarray(tables, np.float64)
  tables = tables[tables.sum((1, 2)) > 1]
  a, b = tables[:, 0, 0], tables[:, 0, 1]
  c, d = tables[:, 1, 0], tables[:, 1, 1]
  n = a + b + c + d
  expected = (a + b) * (a + c) / n
  variance = (a + b) * (c + d) * (a + c) * (b + d) / (n * n * (n - 1))
  deviation = abs(a.sum() - expected.sum())
  if correction:
    deviation = max(deviation - 0.5, 0.0)
  total_variance = variance.sum()
  statistic = deviation**2 / total_variance if total_variance else np.nan
  r, s = a * d / n, b * c / n
  p, q = (a + d) / n, (b + c) / n
  with np.errstate(divide='ignore', invalid='ignore'):
    odds_ratio = r.sum() / s.sum()
    log_variance = ((p * r).sum() / (2 * r.sum()**2) +
                    (p * s + q * r).sum() / (2 * r.sum() * s.sum()) +
                    (q * s).sum() / (2 * s.sum()**2))
    half_width = _Z_95 * np.sqrt(log_variance)
    interval = [odds_ratio * np.exp(-half_width),
                odds_ratio * np.exp(half_width)]
  return {
      'num_strata': int(len(tables)),
      'observed_misclassified_outliers': float(a.sum()),
      'expected_misclassified_outliers': float(expected.sum()),
      'odds_ratio_mh': float(odds_ratio),
      'odds_ratio_mh_ci95': [float(x) for x in interval],
      'cmh_statistic': float(statistic),
      'p_cmh': float(scipy.stats.chi2.sf(statistic, 1)),
  }


def exact_null_distribution(tables: np.ndarray) -> tuple[int, np.ndarray]:
  """(lowest total, pmf) of the total misclassified outliers over `tables`
  [S, 2, 2] when, within each stratum, outliers fall at random."""
  low, pmf = 0, np.ones(1)
  for (a, b), (c, d) in np.asarray(tables, np.int64).tolist():
    rows, outliers_total, n = a + b, a + c, a + b + c + d
    support = np.arange(max(0, rows + outliers_total - n),
                        min(rows, outliers_total) + 1)
    stratum = scipy.stats.hypergeom(n, rows, outliers_total).pmf(support)
    low, pmf = low + int(support[0]), np.convolve(pmf, stratum)
  return low, pmf


def exact_test(tables: np.ndarray) -> dict[str, float]:
  """Exact conditional p-values of the total misclassified outliers:
  two-sided, and one-sided for more than chance ('greater')."""
  tables = np.asarray(tables, np.int64)
  observed = int(tables[:, 0, 0].sum())
  low, pmf = exact_null_distribution(tables)
  at = observed - low
  return {
      'p_exact': float(min(1.0, pmf[pmf <= pmf[at] * _TIES].sum())),
      'p_exact_greater': float(min(1.0, pmf[at:].sum())),
  }


def stratified_statistics(strata: np.ndarray, misclassified: np.ndarray,
                          is_outlier: np.ndarray) -> dict[str, Any]:
  """Mantel-Haenszel and exact stratified statistics, strata = classes."""
  tables = tables_by_stratum(strata, misclassified, is_outlier)
  return {**mantel_haenszel(tables), **exact_test(tables)}


def class_and_ink_strata(labels: np.ndarray, ink: np.ndarray,
                         bins: int = INK_BINS) -> np.ndarray:
  """Stratum [N] = class x ink quantile bin within the class, so that images
  are compared only with images of the same class and similar ink."""
  strata = np.zeros(len(labels), np.int64)
  for k in np.unique(labels):
    members = np.flatnonzero(labels == k)
    order = scipy.stats.rankdata(ink[members], method='ordinal') - 1
    strata[members] = k * bins + order * bins // len(members)
  return strata


def with_adjusted_p_values(
    per_class: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """`per_class` (scores.per_class_statistics) with 'p_two_sided_bh': the
  Fisher p-values adjusted by Benjamini-Hochberg over the classes."""
  p_values = np.array([c['p_two_sided'] for c in per_class], np.float64)
  adjusted = np.full(len(p_values), np.nan)
  tested = ~np.isnan(p_values)
  if tested.any():
    adjusted[tested] = scipy.stats.false_discovery_control(p_values[tested])
  return [{**c, 'p_two_sided_bh': float(p)} for c, p in zip(per_class, adjusted)]
