"""Evaluation of a trained workdir (evaluate.py): predictions.csv and
eval.json. Bad workdirs, data folders and outputs are rows of test_cli's
table; other device counts are in test_parallel."""

import csv
import json
import os

import numpy as np
import pytest

from mnist_jax import evaluate
from mnist_jax import predictions

from conftest import TRAINED_STEPS


@pytest.mark.slow
def test_evaluate_reproduces_training_accuracy(trained_run):
  with open(os.path.join(trained_run.workdir, 'eval.json')) as f:
    evaluation = json.load(f)
  final = trained_run.summary  # trained with test-time views (tta.py)
  assert evaluation['num_examples'] == final['test_examples'] == 200
  assert evaluation['accuracy'] == pytest.approx(final['test_accuracy_tta'],
                                                 abs=1e-9)
  assert evaluation['step'] == TRAINED_STEPS and evaluation['tta'] is True
  assert sum(map(sum, evaluation['confusion_matrix'])) == 200
  with open(os.path.join(trained_run.workdir, 'predictions.csv')) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == predictions.COLUMNS
  assert [int(row['index']) for row in rows] == list(range(200))
  wrong = sum(row['label'] != row['prediction'] for row in rows)
  assert wrong == evaluation['num_misclassified']
  assert evaluation['accuracy'] == pytest.approx(1 - wrong / 200, abs=1e-12)


def test_eval_summary_hand_example():
  labels = np.array([0, 0, 1, 2])
  probabilities = np.full((4, 10), 0.05)
  for row, predicted in enumerate([0, 1, 1, 1]):
    probabilities[row, predicted] = 0.55
  summary = evaluate.eval_summary(labels, probabilities)
  matrix = summary['confusion_matrix']  # rows: true label, columns: prediction
  assert len(matrix) == len(matrix[0]) == 10
  assert matrix[0][0] == 1 and matrix[0][1] == 1
  assert matrix[1][1] == 1 and matrix[2][1] == 1
  assert sum(map(sum, matrix)) == 4
  per_class = summary['per_class_accuracy']
  assert (per_class['0'], per_class['1'], per_class['2']) == (0.5, 1.0, 0.0)
  assert per_class['9'] == 0.0  # no examples: 0, not nan
  assert summary['num_misclassified'] == 2
  assert summary['accuracy'] == 0.5
  assert summary['num_examples'] == 4
