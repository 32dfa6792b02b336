"""Out-of-sample probabilities by K-fold cross-validation.

Every image of the scored split gets its class probabilities from a model
that never trained on it: the split is cut into K stratified folds and each
fold is predicted by a model trained on the other folds (plus, for the test
split, on every training image, as Northcutt et al. 2021 did for the MNIST
test set). Models are trained in memory with the same jitted step as
`train.py`; nothing is read from or written to a workdir here.
"""

import time

import jax
import ml_collections
import numpy as np
from absl import logging
from sklearn import model_selection

from mnist_jax import batches as batches_lib
from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax import parallel
from mnist_jax import train
from mnist_jax import tta
from mnist_jax.data import Split
from mnist_jax.steps import TrainState


def max_folds(labels: np.ndarray) -> int:
  """The most folds that still put an image of every class in each fold."""
  return int(np.bincount(labels, minlength=data_lib.NUM_CLASSES).min())


def fold_ids(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
  """The fold [N] of each image: K stratified folds, shuffled by `seed`."""
  if not 2 <= folds <= max_folds(labels):
    raise ValueError(f'folds={folds}: must be 2 to {max_folds(labels)} (each '
                     'fold needs an image of every class)')
  splitter = model_selection.StratifiedKFold(folds, shuffle=True,
                                             random_state=seed)
  ids = np.empty(len(labels), np.int64)
  for fold, (_, held_out) in enumerate(splitter.split(labels, labels)):
    ids[held_out] = fold
  return ids


def subset(split: Split, positions: np.ndarray) -> Split:
  return Split(images=split.images[positions], labels=split.labels[positions],
               index=split.index[positions])


def concatenate(first: Split, second: Split) -> Split:
  return Split(images=np.concatenate([first.images, second.images]),
               labels=np.concatenate([first.labels, second.labels]),
               index=np.concatenate([first.index, second.index]))


def fit(config: ml_collections.ConfigDict, split: Split,
        seed: int) -> TrainState:
  """A model of `config` trained from scratch on `split` for
  `config.num_epochs` epochs; `seed` sets its initialisation and data order.

  The loop of `train.train_and_evaluate` without the test set, checkpoints
  or logs: one dispatch per step and one host read at the end.
  """
  mesh = parallel.create_mesh()
  parallel.check_divisible(config.batch_size, mesh, 'config.batch_size')
  steps_per_epoch = len(split) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'config.batch_size={config.batch_size} is larger than '
                     f'the {len(split)} images a fold trains on')
  replicated = parallel.replicated(mesh)
  sharding = parallel.stacked_batches_sharding(mesh)
  state = train.create_state_for_config(config, steps_per_epoch,
                                        jax.random.PRNGKey(seed), replicated)
  totals = jax.device_put(train.zero_totals(), replicated)
  train_fn = train.make_train_fn(config, mesh)
  for epoch in range(1, config.num_epochs + 1):
    rows = batches_lib.epoch_rows(len(split), config.batch_size, seed, epoch)
    batches = batches_lib.device_train_batches(split, rows, sharding)
    for i in range(steps_per_epoch):
      state, totals = train_fn(state, totals, batches, i)
  bad_step = int(jax.device_get(totals['nonfinite_step']))
  if bad_step >= 0:
    raise FloatingPointError(f'non-finite training loss at step {bad_step + 1} '
                             'of a fold model (lower config.learning_rate?)')
  return state


def out_of_sample_probabilities(
    config: ml_collections.ConfigDict, scored: Split, folds: np.ndarray,
    always_train: Split | None = None) -> tuple[np.ndarray, dict[str, float]]:
  """Probabilities [N, 10] of each image of `scored` from the model trained
  on the other folds (`folds` [N], ids 0..K-1) and on `always_train`.

  Returns them with the seconds spent training and predicting. Fold k's
  model is seeded with config.seed + k.
  """
  config_lib.validate_config(config)
  probabilities = np.zeros((len(scored), data_lib.NUM_CLASSES), np.float32)
  seconds = {'train': 0.0, 'predict': 0.0}
  views = tta.config_views(config)
  for fold in range(int(folds.max()) + 1):
    start = time.perf_counter()
    fit_split = subset(scored, np.flatnonzero(folds != fold))
    if always_train is not None:
      fit_split = concatenate(always_train, fit_split)
    state = fit(config, fit_split, config.seed + fold)
    jax.block_until_ready(state)
    middle = time.perf_counter()
    held_out = np.flatnonzero(folds == fold)
    outputs = evaluate.predict(state, subset(scored, held_out),
                               config.eval_batch_size, views)
    probabilities[held_out] = outputs['probabilities']
    seconds['train'] += middle - start
    seconds['predict'] += time.perf_counter() - middle
    logging.info('fold %d of %d: trained on %d images in %.0f s; accuracy on '
                 'its %d held-out images %.4f', fold + 1, int(folds.max()) + 1,
                 len(fit_split), middle - start, len(held_out), np.mean(
                     outputs['probabilities'].argmax(-1) ==
                     scored.labels[held_out]))
  return probabilities, seconds
