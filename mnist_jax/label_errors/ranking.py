"""Confident-learning scores of how likely each given label is wrong.

All functions take the given labels [N] and out-of-sample probabilities
[N, K] (each row from a model that never trained on that image) and return
arrays; nothing here trains or reads files. Northcutt, Jiang & Chuang
(2021), "Confident learning: estimating uncertainty in dataset labels", and
Northcutt, Athalye & Mueller (2021), "Pervasive label errors in test sets".

- self-confidence: p[label], the probability of the given label;
- normalized margin: (p[label] - max_{k != label} p[k] + 1) / 2;
- confident joint: C[i, j] counts images labelled i whose probability of
  class j reaches class j's threshold t_j (the mean p[j] over the images
  labelled j), the largest such class when several do. Its off-diagonal
  entries estimate how many images labelled i belong to j; calibrated to the
  label counts they give the number of label errors to remove per class
  pair ("prune by noise rate": the images labelled i with the largest
  margin p[j] - p[i]).

Scores are label-quality scores in [0, 1]: lower = more likely mislabelled.
"""

from typing import Any

import numpy as np
import scipy.stats
from sklearn import metrics

METHODS = ('self_confidence', 'normalized_margin', 'confident_joint')
DEFAULT_METHOD = 'self_confidence'
METHOD_RULES = {
    'self_confidence': 'score = p(given label); rank 1 = lowest score',
    'normalized_margin': 'score = (p(given label) - largest other p + 1) / 2; '
                         'rank 1 = lowest score',
    'confident_joint': 'the images the calibrated confident joint flags '
                       '(prune by noise rate) first, each group ordered by '
                       'self-confidence; score = self-confidence',
}


def self_confidence(labels: np.ndarray,
                    probabilities: np.ndarray) -> np.ndarray:
  return probabilities[np.arange(len(labels)), labels]


def normalized_margin(labels: np.ndarray,
                      probabilities: np.ndarray) -> np.ndarray:
  others = probabilities.copy()
  others[np.arange(len(labels)), labels] = -np.inf
  return (self_confidence(labels, probabilities) - others.max(-1) + 1) / 2


def per_class_thresholds(labels: np.ndarray,
                         probabilities: np.ndarray) -> np.ndarray:
  """t_j: the mean probability of class j over the images labelled j (NaN
  for a class with no image, which then never counts as confident)."""
  num_classes = probabilities.shape[1]
  sums = np.bincount(labels, self_confidence(labels, probabilities),
                     num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    return sums / counts


def confident_classes(labels: np.ndarray,
                      probabilities: np.ndarray) -> np.ndarray:
  """The class [N] each image confidently belongs to, or -1 for none: of the
  classes j with p[j] >= t_j, the most probable."""
  above = probabilities >= per_class_thresholds(labels, probabilities)
  masked = np.where(above, probabilities, -np.inf)
  return np.where(above.any(-1), masked.argmax(-1), -1)


def confident_joint(labels: np.ndarray,
                    probabilities: np.ndarray) -> np.ndarray:
  """C [K, K]: images with given label i (row) confidently in class j."""
  num_classes = probabilities.shape[1]
  confident = confident_classes(labels, probabilities)
  counted = confident >= 0
  joint = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(joint, (labels[counted], confident[counted]), 1)
  return joint


def calibrated_joint(joint: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The confident joint with each row rescaled to its label's count, so
  the entries estimate numbers of images (they sum to N)."""
  counts = np.bincount(labels, minlength=len(joint))
  row_sums = joint.sum(1)
  scale = np.divide(counts, row_sums, out=np.zeros(len(joint)),
                    where=row_sums > 0)
  return joint * scale[:, None]


def confident_joint_issues(labels: np.ndarray,
                           probabilities: np.ndarray) -> np.ndarray:
  """Mask [N] of the label errors found by pruning by noise rate: for each
  pair i != j, the round(calibrated C[i, j]) images labelled i with the
  largest margin p[j] - p[i]; images whose argmax is their label are kept."""
  estimate = np.rint(calibrated_joint(confident_joint(labels, probabilities),
                                      labels)).astype(np.int64)
  issues = np.zeros(len(labels), bool)
  for i, j in zip(*np.nonzero(estimate)):
    if i == j:
      continue
    members = np.flatnonzero(labels == i)
    margin = probabilities[members, j] - probabilities[members, i]
    issues[members[np.argsort(-margin, kind='stable')[:estimate[i, j]]]] = True
  return issues & (probabilities.argmax(-1) != labels)


def ranks(order: np.ndarray) -> np.ndarray:
  """Rank [N] (1 = first) of each position, from the positions in order."""
  rank = np.empty(len(order), np.int64)
  rank[order] = np.arange(1, len(order) + 1)
  return rank


def label_quality(labels: np.ndarray, probabilities: np.ndarray,
                  method: str = DEFAULT_METHOD
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(score [N], rank [N]) of `method`; rank 1 = most likely mislabelled.
  Ties keep the image order."""
  if method not in METHODS:
    raise ValueError(f'method: expected one of {", ".join(METHODS)}, got '
                     f'{method!r}')
  labels = np.asarray(labels)
  probabilities = np.asarray(probabilities, np.float64)
  if method == 'normalized_margin':
    score = normalized_margin(labels, probabilities)
    return score, scipy.stats.rankdata(score, method='ordinal')
  score = self_confidence(labels, probabilities)
  if method == 'self_confidence':
    return score, scipy.stats.rankdata(score, method='ordinal')
  flagged = confident_joint_issues(labels, probabilities)
  return score, ranks(np.lexsort((score, ~flagged)))


def flip_labels(labels: np.ndarray, count: int, seed: int,
                num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """(noisy labels, flipped positions): `count` positions drawn without
  replacement, each given a uniformly drawn other class."""
  if not 0 <= count <= len(labels):
    raise ValueError(f'flip_labels={count}: must be 0 to {len(labels)}')
  rng = np.random.default_rng(seed)
  positions = np.sort(rng.choice(len(labels), count, replace=False))
  noisy = np.array(labels, copy=True)
  noisy[positions] = (noisy[positions] +
                      rng.integers(1, num_classes, count)) % num_classes
  return noisy, positions


def retrieval(rank: np.ndarray, is_error: np.ndarray,
              cutoffs: tuple[int, ...]) -> dict[str, Any]:
  """Precision and recall at each cutoff N, and average precision, of a
  ranking against the known errors."""
  is_error = np.asarray(is_error, bool)
  num_errors = int(is_error.sum())
  result = {'num_errors': num_errors,
            'average_precision': float(metrics.average_precision_score(
                is_error, -rank)) if num_errors else float('nan'),
            'at': []}
  for cutoff in cutoffs:
    found = int(np.sum(is_error & (rank <= cutoff)))
    recall = found / num_errors if num_errors else float('nan')
    result['at'].append({'n': cutoff, 'found': found,
                         'precision': found / cutoff, 'recall': recall})
  return result
