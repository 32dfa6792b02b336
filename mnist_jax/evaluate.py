"""Restores a trained model and predicts every test image.

`predictions.csv` has one row per test image, in the split's stable index
order: index, label, prediction, confidence (the top probability) and the
ten class probabilities prob_0..prob_9. `eval.json` has the accuracy, the
number of examples, per-class accuracy and the confusion matrix
(rows: true label, columns: prediction).
"""

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import data as data_lib
from mnist_jax import io_utils
from mnist_jax import models
from mnist_jax import parallel
from mnist_jax import train

PREDICTION_COLUMNS = (['index', 'label', 'prediction', 'confidence'] +
                      [f'prob_{k}' for k in range(data_lib.NUM_CLASSES)])


def restore_trained_state(
    workdir: str, config_overrides: dict[str, Any] | None = None
) -> tuple[ml_collections.ConfigDict, train.TrainState]:
  """The config and train state of the latest checkpoint in `workdir`.

  `config_overrides` may change keys that do not shape the model, such as
  `data_dir` when the data has moved since training.
  """
  config = checkpoint_lib.read_config(workdir)
  config.update(config_overrides or {})
  mesh = parallel.create_mesh()
  replicated = parallel.replicated(mesh)
  steps_per_epoch = 1  # only shapes the schedule, which inference never uses
  state = train.create_train_state(models.create_model(config), config,
                                   steps_per_epoch, jax.random.PRNGKey(0),
                                   replicated)
  state, _ = checkpoint_lib.Checkpoints(workdir, config).restore(
      state, jax.device_put(train.zero_totals(), replicated), replicated)
  return config, state


def predict(state: train.TrainState, split: data_lib.Split,
            batch_size: int) -> dict[str, np.ndarray]:
  """Probabilities [N, 10] and penultimate features [N, D] of every example."""
  mesh = parallel.create_mesh()
  parallel.check_divisible(batch_size, mesh, 'eval_batch_size')
  batches = train.device_eval_batches(split, batch_size,
                                      parallel.stacked_batches_sharding(mesh))
  predict_fn = jax.jit(lambda s, b, i: train.predict_step(s, b['image'][i]),
                       out_shardings=parallel.replicated(mesh))
  outputs = [predict_fn(state, batches, i)
             for i in range(train.num_batches(batches))]
  stacked = jax.device_get(jax.tree.map(lambda *xs: np.concatenate(xs), *outputs))
  return {key: value[:len(split)] for key, value in stacked.items()}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
  """Counts [true label, prediction]."""
  matrix = np.zeros((data_lib.NUM_CLASSES,) * 2, np.int64)
  np.add.at(matrix, (labels, predictions), 1)
  return matrix


def eval_summary(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
  predictions = probabilities.argmax(-1)
  matrix = confusion_matrix(labels, predictions)
  per_class = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
  return {
      'accuracy': float(np.mean(predictions == labels)),
      'num_examples': int(len(labels)),
      'num_misclassified': int(np.sum(predictions != labels)),
      'per_class_accuracy': {str(k): float(a) for k, a in enumerate(per_class)},
      'confusion_matrix': matrix.tolist(),
      'confusion_matrix_axes': 'rows: true label, columns: prediction',
  }


def predictions_csv(split: data_lib.Split, probabilities: np.ndarray) -> str:
  rows = zip(split.index, split.labels, probabilities)
  return io_utils.csv_text(PREDICTION_COLUMNS, (
      [int(index), int(label), int(probs.argmax()), f'{probs.max():.6f}'] +
      [f'{p:.6f}' for p in probs] for index, label, probs in rows))


def evaluate_workdir(workdir: str,
                     config_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
  """Writes W/predictions.csv and W/eval.json for the latest checkpoint."""
  config, state = restore_trained_state(workdir, config_overrides)
  io_utils.ensure_writable_dir(workdir)
  test_split = data_lib.load_split(config, 'test')
  outputs = predict(state, test_split, config.eval_batch_size)
  summary = eval_summary(test_split.labels, outputs['probabilities'])
  summary['step'] = int(state.step)
  if parallel.is_main_process():
    io_utils.write_text(os.path.join(workdir, 'predictions.csv'),
                        predictions_csv(test_split, outputs['probabilities']))
    io_utils.write_json(os.path.join(workdir, 'eval.json'), summary)
  return summary
