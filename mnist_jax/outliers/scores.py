"""Isolation Forest outliers, crossed with the model's misclassifications.

Scores are scikit-learn's `IsolationForest.decision_function`: negative means
outlier, and `is_outlier = score < 0` (what `IsolationForest.predict` calls
-1). With `contamination='auto'` the threshold is sklearn's fixed offset of
-0.5 on `score_samples`; with a float it is that quantile of the scores of the
set the forest was fitted on. The default is 0.05: the 5% most anomalous
images are outliers, so the chance rate is 5% in every feature space. ('auto',
the original paper's score > 0.5 rule, flagged 18% of MNIST test images in
pixel space and none in embedding space, leaving nothing to compare there.)

The 2x2 table crosses misclassified (rows: misclassified, correct) with
outlier (columns: outlier, inlier). Its odds ratio is the odds of being an
outlier among misclassified images over the odds among correct ones, so a
value above 1 means misclassified images are outliers more often than chance.

A known blind spot: on raw pixels a blank image is among the *least* anomalous
(every pixel of it takes the value most digits share at that pixel, zero), so
pixel-space Isolation Forest cannot flag missing ink. Inverted and noise
images are flagged strongly.
"""

from typing import Any

import numpy as np
import scipy.stats
from scipy.stats import contingency
from sklearn.ensemble import IsolationForest

from mnist_jax.data import NUM_CLASSES

DEFAULT_N_ESTIMATORS = 100
DEFAULT_MAX_SAMPLES = 256
DEFAULT_CONTAMINATION = 0.05
DEFAULT_OUTLIER_WEIGHT = 0.25
CONFIDENCE_LEVEL = 0.95
ODDS_RATIO_KIND = 'conditional'
ODDS_RATIO_METHOD = (
    'conditional maximum likelihood estimate (scipy.stats.contingency.'
    'odds_ratio, kind="conditional"), 95% CI by inverting the noncentral '
    'hypergeometric distribution; odds_ratio_sample is (a*d)/(b*c)')
P_VALUE_METHOD = (
    "Fisher's exact test (scipy.stats.fisher_exact): p_two_sided with "
    "alternative='two-sided', p_greater with alternative='greater' "
    '(misclassified images are outliers more often than correct ones)')
RANKING_RULE = (
    f'suspicion = (1 - p_label + margin) / 2 + {DEFAULT_OUTLIER_WEIGHT} * '
    'outlierness, where p_label is the model probability of the given label, '
    'margin = p_top - p_label and outlierness is the percentile rank of the '
    'IF score '
    '(1 = most anomalous); rank 1 = highest suspicion. The model evidence '
    'dominates (0 = model sure of the label, 1 = sure of another class); the '
    'outlier score reorders images of similar model evidence, and an image '
    'the model classifies as its label can never outrank one it gives '
    '>= 0.9 to another class and <= 0.1 to the label.')
SIGN_CONVENTION = (
    'if_score is sklearn IsolationForest.decision_function: negative = '
    'outlier, is_outlier = if_score < 0; lower = more anomalous')


def pixel_features(images: np.ndarray) -> np.ndarray:
  """uint8 images [N, 28, 28, 1] as float32 [N, 784] in [0, 1]."""
  return images.reshape(len(images), -1).astype(np.float32) / 255.0


def isolation_forest_scores(
    features: np.ndarray,
    fit_features: np.ndarray | None = None,
    n_estimators: int = DEFAULT_N_ESTIMATORS,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    contamination: str | float = DEFAULT_CONTAMINATION,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Isolation Forest scores [N] and is_outlier [N] of `features` [N, D].

  The forest is fitted on `fit_features` (e.g. the training images) when
  given, else on `features` themselves. `max_samples` is capped at the size
  of the fitting set, which is what sklearn would do with a warning.
  """
  fit_features = features if fit_features is None else fit_features
  forest = IsolationForest(
      n_estimators=n_estimators,
      max_samples=min(max_samples, len(fit_features)),
      contamination=contamination,
      random_state=seed,
  ).fit(fit_features)
  scores = forest.decision_function(features)
  return scores, scores < 0


def contingency_table(misclassified: np.ndarray,
                      is_outlier: np.ndarray) -> np.ndarray:
  """Counts [[mis & out, mis & in], [correct & out, correct & in]]."""
  rows = np.asarray(misclassified, bool)
  columns = np.asarray(is_outlier, bool)
  return np.array([[np.sum(rows & columns), np.sum(rows & ~columns)],
                   [np.sum(~rows & columns), np.sum(~rows & ~columns)]],
                  np.int64)


def _rate(numerator: int, denominator: int) -> float:
  return numerator / denominator if denominator else float('nan')


def table_statistics(table: np.ndarray) -> dict[str, Any]:
  """Counts, rates, odds ratio with its 95% CI and Fisher p-values."""
  table = np.asarray(table, np.int64)
  (a, b), (c, d) = table.tolist()
  n = a + b + c + d
  result = contingency.odds_ratio(table, kind=ODDS_RATIO_KIND)
  interval = result.confidence_interval(CONFIDENCE_LEVEL)
  misclassified, num_outliers = a + b, a + c
  return {
      'num_images': n,
      'num_misclassified': misclassified,
      'num_correct': c + d,
      'num_outliers': num_outliers,
      'misclassified_outliers': a,
      'misclassified_inliers': b,
      'correct_outliers': c,
      'correct_inliers': d,
      'table': [[a, b], [c, d]],
      'misclassification_rate': _rate(misclassified, n),
      'outlier_rate': _rate(num_outliers, n),
      'outlier_rate_misclassified': _rate(a, misclassified),
      'outlier_rate_correct': _rate(c, c + d),
      'misclassification_rate_outliers': _rate(a, num_outliers),
      'misclassification_rate_inliers': _rate(b, b + d),
      'expected_misclassified_outliers_if_independent': _rate(
          misclassified * num_outliers, n),
      'odds_ratio': float(result.statistic),
      'odds_ratio_ci95': [float(interval.low), float(interval.high)],
      'odds_ratio_sample': float(
          contingency.odds_ratio(table, kind='sample').statistic),
      'p_two_sided': float(
          scipy.stats.fisher_exact(table, alternative='two-sided').pvalue),
      'p_greater': float(
          scipy.stats.fisher_exact(table, alternative='greater').pvalue),
  }


def per_class_statistics(labels: np.ndarray, misclassified: np.ndarray,
                         is_outlier: np.ndarray) -> list[dict[str, Any]]:
  """`table_statistics` of the images of each true class 0..9."""
  return [
      {'label': k, **table_statistics(contingency_table(
          misclassified[labels == k], is_outlier[labels == k]))}
      for k in range(NUM_CLASSES)
  ]


def score_separation(scores: np.ndarray,
                     misclassified: np.ndarray) -> dict[str, float]:
  """How much lower misclassified images score, with no outlier threshold.

  auc is P(score of a random misclassified image < score of a random correct
  one), ties counting half: 0.5 = no relation, 1 = every misclassified image
  is more anomalous. p_less is the one-sided Mann-Whitney U test of that
  direction, p_two_sided the two-sided one (asymptotic, tie-corrected).
  """
  misclassified = np.asarray(misclassified, bool)
  worse, better = scores[misclassified], scores[~misclassified]
  if not len(worse) or not len(better):
    nan = float('nan')
    return {'auc': nan, 'p_less': nan, 'p_two_sided': nan}
  less = scipy.stats.mannwhitneyu(worse, better, alternative='less')
  return {
      'auc': 1 - float(less.statistic) / (len(worse) * len(better)),
      'p_less': float(less.pvalue),
      'p_two_sided': float(scipy.stats.mannwhitneyu(
          worse, better, alternative='two-sided').pvalue),
  }


def format_p_value(p: float) -> str:
  if np.isnan(p):
    return 'n/a'
  return f'{p:.2g}' if p < 0.001 else f'{p:.3f}'


def _format_percent(rate: float) -> str:
  return 'n/a' if np.isnan(rate) else f'{100 * rate:.1f}%'


def _format_ratio(value: float) -> str:
  return 'n/a' if np.isnan(value) else f'{value:.2f}'


def answer_sentence(stats: dict[str, Any]) -> str:
  """The question answered in one sentence, from `table_statistics`."""
  return (
      f'{stats["num_misclassified"]:,} of {stats["num_images"]:,} test images '
      f'were misclassified; {stats["misclassified_outliers"]:,} of them '
      f'({_format_percent(stats["outlier_rate_misclassified"])}) are outliers, '
      f'against {_format_percent(stats["outlier_rate_correct"])} of correctly '
      f'classified images (odds ratio {_format_ratio(stats["odds_ratio"])}, '
      f'p = {format_p_value(stats["p_two_sided"])}).')


def outlierness(scores: np.ndarray) -> np.ndarray:
  """Percentile rank of anomaly in [0, 1]: 1 = lowest IF score, 0 = highest."""
  if len(scores) < 2:
    return np.zeros(len(scores))
  return (scipy.stats.rankdata(-np.asarray(scores)) - 1) / (len(scores) - 1)


def label_error_candidates(
    labels: np.ndarray,
    probabilities: np.ndarray,
    scores: np.ndarray,
    outlier_weight: float = DEFAULT_OUTLIER_WEIGHT,
) -> dict[str, np.ndarray]:
  """Ranks images by how suspicious their label is.

  model_evidence = (1 - p_label + margin) / 2, where p_label is the model's
  probability of the given label and margin = p_top - p_label (0 when the
  model agrees). It is 0 when the model is certain of the label and 1 when it
  is certain of another class, and it favours a confident other class over a
  spread-out guess. suspicion = model_evidence + outlier_weight * outlierness,
  with outlierness the percentile rank of the IF score (1 = most anomalous).
  The model decides, the outlier score reorders images of similar model
  evidence: with the default weight 0.25 an image the model classifies as
  its label (evidence <= 0.45) never outranks one whose label gets <= 0.1
  while another class gets >= 0.9 (evidence >= 0.85). Rank 1 is the most
  suspicious; ties go to the lower position.
  """
  labels = np.asarray(labels)
  probabilities = np.asarray(probabilities, np.float64)
  p_label = probabilities[np.arange(len(labels)), labels]
  margin = probabilities.max(-1) - p_label
  model_evidence = (1 - p_label + margin) / 2
  anomaly = outlierness(scores)
  suspicion = model_evidence + outlier_weight * anomaly
  # 'ordinal': ties go to the lower position.
  rank = scipy.stats.rankdata(-suspicion, method='ordinal')
  return {'p_label': p_label, 'margin': margin,
          'model_evidence': model_evidence, 'outlierness': anomaly,
          'suspicion': suspicion, 'rank': rank}
