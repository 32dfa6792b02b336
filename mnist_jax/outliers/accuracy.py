"""How accurate and how calibrated the model is, from predictions.csv.

The confusion matrix and per-class accuracy are `evaluate.eval_summary`'s
(the same numbers as eval.json). Calibration is the reliability of the top
probability ("confidence"): in equal-width bins of confidence, the accuracy
against the mean confidence, and the expected calibration error
ECE = sum over bins of (images in bin / N) * |accuracy - mean confidence|
(Guo et al. 2017, 15 bins).
"""

from typing import Any

import numpy as np

from mnist_jax import evaluate
from mnist_jax.predictions import Predictions

NUM_BINS = 15
HIGH_CONFIDENCE = 0.9


def reliability(confidence: np.ndarray, correct: np.ndarray,
                num_bins: int = NUM_BINS) -> dict[str, Any]:
  """The non-empty bins of (0, 1] by confidence, and the ECE."""
  edges = np.linspace(0, 1, num_bins + 1)
  which = np.clip(np.searchsorted(edges, confidence, side='left') - 1, 0,
                  num_bins - 1)
  bins, ece = [], 0.0
  for b in range(num_bins):
    members = which == b
    count = int(members.sum())
    if not count:
      continue
    accuracy = float(correct[members].mean())
    mean_confidence = float(confidence[members].mean())
    ece += count / len(confidence) * abs(accuracy - mean_confidence)
    bins.append({'low': float(edges[b]), 'high': float(edges[b + 1]),
                 'count': count, 'accuracy': accuracy,
                 'confidence': mean_confidence})
  return {'num_bins': num_bins, 'ece': ece, 'bins': bins}


def accuracy_summary(predictions: Predictions) -> dict[str, Any]:
  """eval.json's numbers, the reliability bins and ECE, and how many errors
  the model made with confidence above HIGH_CONFIDENCE."""
  summary = evaluate.eval_summary(predictions.labels, predictions.probabilities)
  confidence = predictions.probabilities.max(-1)
  correct = predictions.predictions == predictions.labels
  summary['reliability'] = reliability(confidence, correct)
  summary['misclassified_above_confidence'] = {
      'confidence': HIGH_CONFIDENCE,
      'count': int(np.sum(~correct & (confidence > HIGH_CONFIDENCE)))}
  return summary
