"""Restores a trained model and predicts every test image.

Writes `predictions.csv` (predictions.py) and `eval.json`: the accuracy, the
number of examples, per-class accuracy and the confusion matrix (rows: true
label, columns: prediction). Both come from the checkpoint config's
test-time views: nine per image with `tta`, else the image alone.
"""

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from sklearn import metrics

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import data as data_lib
from mnist_jax import io_utils
from mnist_jax import batches as batches_lib
from mnist_jax import parallel
from mnist_jax import predictions as predictions_lib
from mnist_jax import steps
from mnist_jax import train
from mnist_jax import tta
from mnist_jax import workdir as workdir_lib
from mnist_jax import xla_cpu

OUTPUT_NAMES = ('predictions.csv', 'eval.json')


def restore_trained_state(
    workdir: str, config_overrides: dict[str, Any] | None = None
) -> tuple[ml_collections.ConfigDict, steps.TrainState]:
  """The config and train state of the newest readable checkpoint in
  `workdir` (checkpoint.py: it may be a live run's).

  `config_overrides` may change keys that do not shape the model, such as
  `data_dir` when the data has moved since training.
  """
  config = checkpoint_lib.read_config(workdir)
  config.update(config_overrides or {})
  mesh = parallel.create_mesh()
  replicated = parallel.replicated(mesh)
  steps_per_epoch = 1  # only shapes the schedule, which inference never uses
  state = train.create_state_for_config(config, steps_per_epoch,
                                        jax.random.PRNGKey(0), replicated)
  state, _ = checkpoint_lib.Checkpoints(workdir, config, read_only=True).restore(
      state, jax.device_put(train.zero_totals(), replicated), replicated)
  return config, state


def check_data_dir(workdir: str, data_dir: str | None) -> None:
  """Rejects a data folder that is not there, saying where it came from:
  `data_dir` if given, else the folder saved with the checkpoint in
  `workdir` (empty: tensorflow-datasets, which needs none)."""
  if data_dir is not None:
    if os.path.isfile(os.path.expanduser(data_dir)):
      raise NotADirectoryError(f'data_dir {data_dir!r} is a file, not a '
                               'folder of IDX files')
    if not os.path.isdir(os.path.expanduser(data_dir)):
      raise FileNotFoundError(f'data_dir {data_dir!r}: no such folder')
    return
  saved = checkpoint_lib.read_config(workdir).data_dir
  if saved and not os.path.isdir(os.path.expanduser(saved)):
    raise FileNotFoundError(
        f'the data folder {saved!r} saved with the checkpoint in workdir '
        f'{workdir!r} does not exist (moved?); pass data_dir=FOLDER, the '
        'folder of IDX files')


def predict(state: steps.TrainState, split: data_lib.Split, batch_size: int,
            views: tuple[tta.View, ...] = tta.IDENTITY) -> dict[str, np.ndarray]:
  """Probabilities [N, 10] and penultimate features [N, D] of every example.

  Probabilities average the test-time `views` (tta.py); features are of the
  images as they are. `batch_size` is rounded up to a multiple of the device
  count.
  """
  mesh = parallel.create_mesh()
  batch_size = parallel.device_batch_size(batch_size, mesh.size)
  batches = batches_lib.device_eval_batches(
      split, batch_size, parallel.stacked_batches_sharding(mesh))
  predict_fn = jax.jit(lambda s, b, i: steps.predict_step(s, b['image'][i], views),
                       out_shardings=parallel.replicated(mesh),
                       compiler_options=xla_cpu.STEP_COMPILER_OPTIONS)
  outputs = [predict_fn(state, batches, i)
             for i in range(batches_lib.num_batches(batches))]
  stacked = jax.device_get(jax.tree.map(lambda *xs: np.concatenate(xs), *outputs))
  return {key: value[:len(split)] for key, value in stacked.items()}


def eval_summary(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
  """The contents of eval.json, from true labels [N] and probabilities [N, 10]."""
  predictions = probabilities.argmax(-1)
  matrix = metrics.confusion_matrix(labels, predictions,
                                    labels=range(data_lib.NUM_CLASSES))
  per_class = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
  return {
      'accuracy': float(np.mean(predictions == labels)),
      'num_examples': int(len(labels)),
      'num_misclassified': int(np.sum(predictions != labels)),
      'per_class_accuracy': {str(k): float(a) for k, a in enumerate(per_class)},
      'confusion_matrix': matrix.tolist(),
      'confusion_matrix_axes': 'rows: true label, columns: prediction',
  }


def evaluate_workdir(workdir: str, data_dir: str | None = None) -> dict[str, Any]:
  """Writes W/predictions.csv and W/eval.json for the newest readable checkpoint.

  `data_dir` (the data_dir flag) replaces the data folder saved with the
  checkpoint. Every input and output path is checked before anything is
  computed or written. Holds the workdir's lock meanwhile (workdir.py); beside
  a training run, evaluates its newest complete checkpoint, and eval.json's
  `training_running` names the run (else null).
  """
  check_data_dir(workdir, data_dir)
  paths = io_utils.check_output_paths(workdir, OUTPUT_NAMES)
  with workdir_lib.locked_unless_training(workdir, 'evaluate') as training:
    return _evaluate(workdir, data_dir, paths, training)


def _evaluate(workdir: str, data_dir: str | None, paths: list[str],
              training: workdir_lib.Holder | None) -> dict[str, Any]:
  overrides = {} if data_dir is None else {'data_dir': data_dir}
  config, state = restore_trained_state(workdir, overrides)
  test_split = data_lib.load_split(config, 'test')
  outputs = predict(state, test_split, config.eval_batch_size,
                    tta.config_views(config))
  summary = eval_summary(test_split.labels, outputs['probabilities'])
  summary['step'] = int(state.step)
  summary['training_running'] = (None if training is None else
                                 dataclasses.asdict(training))
  if training:
    logging.warning('evaluated checkpoint step %d; training is still running',
                    summary['step'])
  summary['tta'] = bool(config.tta)
  # load_split refused IDX files of another published dataset.
  summary['dataset'] = config.dataset
  summary['data_source'] = config.data_dir or 'tensorflow-datasets'
  if parallel.is_main_process():
    predictions_path, eval_path = paths
    io_utils.write_text(predictions_path,
                        predictions_lib.predictions_csv(test_split, outputs['probabilities']))
    io_utils.write_json(eval_path, summary)
  return summary
