"""The label-error step: out-of-sample probabilities, a ranking, its files.

`find_label_errors(config, workdir, split)` trains `folds` models of
`config` in memory (folds.py), ranks every image of the split by how likely
its label is wrong (ranking.py) and writes into the workdir:

- label_errors_{split}.csv: index, label, suggested (the out-of-sample
  argmax), p_label, p_suggested, score (lower = more likely mislabelled) and
  rank (1 = most likely), one row per image, in rank order;
- label_errors_{split}.json: method, folds, out-of-sample accuracy, the
  confident joint and its counts, the top candidates, timings, and with
  `flip_labels` the precision and recall of every method against the
  flipped labels;
- label_errors_{split}.png: the top candidates, label -> suggested.

Every input is checked before any model is trained or any file written.
"""

import json
import os
import time
from typing import Any

import ml_collections
import numpy as np

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import io_utils
from mnist_jax import models
from mnist_jax import parallel
from mnist_jax import workdir as workdir_lib
from mnist_jax.data import Split
from mnist_jax.label_errors import folds as folds_lib
from mnist_jax.label_errors import ranking
from mnist_jax.outliers import figures
from mnist_jax.outliers.analysis import json_safe

DEFAULT_FOLDS = 5
COLUMNS = ('index', 'label', 'suggested', 'p_label', 'p_suggested', 'score',
           'rank')
NUM_LISTED = 20
NUM_TILES = 40
RETRIEVAL_CUTOFFS = (100, 300, 600, 1200)


def output_names(split: str) -> tuple[str, str, str]:
  return tuple(f'label_errors_{split}.{ext}' for ext in ('csv', 'json', 'png'))


def _recorded_datasets(workdir: str) -> dict[str, str]:
  """The dataset of each run found in `workdir`, by the file naming it."""
  found = {}
  if os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
    try:
      found['checkpoints'] = checkpoint_lib.read_config(workdir).dataset
    except FileNotFoundError:  # a folder with no complete checkpoint yet
      pass
  reports = tuple(output_names(split)[1] for split in data_lib.SPLITS)
  for name in ('eval.json',) + reports:
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      with open(path) as f:
        try:
          dataset = json.load(f).get('dataset')
        except (json.JSONDecodeError, AttributeError):
          raise ValueError(f'workdir {workdir!r}: {name} is not a JSON '
                           'object; use another workdir') from None
      if dataset:
        found[name] = dataset
  return found


def check_workdir(workdir: str, dataset: str) -> None:
  """Refuses a workdir that holds a run on another dataset."""
  if not os.path.isdir(workdir):
    return
  for where, other in _recorded_datasets(workdir).items():
    if other != dataset:
      raise ValueError(f'workdir {workdir!r} holds a run on {other} ({where}), '
                       f'not {dataset}; use another workdir for {dataset}')


def _check_inputs(config: ml_collections.ConfigDict, split: str, method: str,
                  flip_labels: int) -> None:
  if split not in data_lib.SPLITS:
    raise ValueError(f'split {split!r}: expected train or test')
  if method not in ranking.METHODS:
    raise ValueError(f'method {method!r}: expected one of '
                     f'{", ".join(ranking.METHODS)}')
  if flip_labels < 0:
    raise ValueError(f'flip_labels={flip_labels}: must be >= 0')
  config_lib.validate_config(config)
  models.create_model(config)  # checks model_kwargs before data is read


def _check_fold_size(config: ml_collections.ConfigDict, num_fit: int) -> None:
  if num_fit < config.batch_size:
    raise ValueError(f'config.batch_size={config.batch_size} is larger than '
                     f'the {num_fit} images a fold model trains on')


def _class_pairs(joint: np.ndarray) -> list[dict[str, int]]:
  """Off-diagonal entries of the confident joint, largest first."""
  pairs = [{'label': int(i), 'suggested': int(j), 'count': int(joint[i, j])}
           for i, j in zip(*np.nonzero(joint)) if i != j]
  return sorted(pairs, key=lambda p: -p['count'])


def _counts(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
  joint = ranking.confident_joint(labels, probabilities)
  calibrated = ranking.calibrated_joint(joint, labels)
  return {
      'num_images': int(len(labels)),
      'num_disagreements': int(np.sum(probabilities.argmax(-1) != labels)),
      'num_confident_joint_issues': int(
          ranking.confident_joint_issues(labels, probabilities).sum()),
      'confident_joint_off_diagonal': int(joint.sum() - np.trace(joint)),
      'estimated_label_errors': float(calibrated.sum() - np.trace(calibrated)),
      'confident_joint': joint.tolist(),
      'confident_joint_axes': 'rows: given label, columns: class the image '
                              'is confidently in (p >= that class\'s threshold)',
      'class_thresholds': ranking.per_class_thresholds(
          labels, probabilities).tolist(),
      'class_pairs': _class_pairs(joint),
  }


def _rows(split: Split, labels: np.ndarray, probabilities: np.ndarray,
          score: np.ndarray, order: np.ndarray) -> list[list[Any]]:
  """The CSV rows, in `order` (rank 1 first); six significant digits, since
  the top candidates' probabilities are far below 1e-6."""
  suggested = probabilities.argmax(-1)
  return [[int(split.index[i]), int(labels[i]), int(suggested[i]),
           f'{probabilities[i, labels[i]]:.6g}',
           f'{probabilities[i, suggested[i]]:.6g}', f'{score[i]:.6g}', rank]
          for rank, i in enumerate(order, start=1)]


def _synthetic_noise(labels: np.ndarray, flipped: np.ndarray,
                     noisy: np.ndarray, probabilities: np.ndarray,
                     seed: int) -> dict[str, Any]:
  """How well each method finds the flipped labels."""
  is_flipped = np.zeros(len(labels), bool)
  is_flipped[flipped] = True
  cutoffs = tuple(sorted(n for n in {*RETRIEVAL_CUTOFFS, len(flipped)}
                         if n <= len(labels)))
  return {
      'num_flipped': int(len(flipped)),
      'seed': seed,
      'rule': 'positions drawn without replacement, each label replaced by a '
              'uniformly drawn other class (numpy default_rng(seed))',
      'flipped_index': flipped.tolist(),
      'out_of_sample_accuracy_original_labels': float(
          np.mean(probabilities.argmax(-1) == labels)),
      'retrieval': {
          method: ranking.retrieval(
              ranking.label_quality(noisy, probabilities, method)[1],
              is_flipped, cutoffs)
          for method in ranking.METHODS},
  }


def _write(paths: tuple[str, str, str], scored: Split, order: np.ndarray,
           rows: list[list[Any]], summary: dict[str, Any]) -> None:
  csv_path, json_path, png_path = paths
  io_utils.write_text(csv_path, io_utils.csv_text(COLUMNS, rows))
  names = data_lib.CLASS_NAMES.get(summary['dataset'],
                                   data_lib.CLASS_NAMES['mnist'])
  top = rows[:NUM_TILES]
  titles = [f'#{index} {names[label]}->{names[suggested]}\n'
            f'p={float(p_label):.2g}'
            for index, label, suggested, p_label, *_ in top]
  figures.image_grid(
      png_path, scored.images[order[:NUM_TILES]], titles,
      f'{summary["dataset_title"]} {summary["split"]}: top {len(top)} '
      'label-error candidates (given -> suggested; p = out-of-sample '
      'probability of the given label)')
  io_utils.write_json(json_path, json_safe(summary))


def _summary(config: ml_collections.ConfigDict, workdir: str, scored: Split,
             split: str, fold: np.ndarray, method: str, labels: np.ndarray,
             probabilities: np.ndarray, rows: list[list[Any]],
             num_train: int) -> dict[str, Any]:
  """The dict of label_errors_{split}.json (before noise and timings)."""
  correct = probabilities.argmax(-1) == labels
  folds = int(fold.max()) + 1
  return {
      'split': split,
      'dataset': config.dataset,
      'dataset_title': data_lib.dataset_title(config.dataset, scored,
                                              bool(config.data_dir)),
      'data_source': config.data_dir or 'tensorflow-datasets',
      'workdir': os.path.abspath(workdir),
      'method': method,
      'method_rule': ranking.METHOD_RULES[method],
      'folds': folds,
      'fold_scheme': (
          'sklearn StratifiedKFold(shuffle=True, random_state=config.seed); '
          'each fold is scored by a model trained on the other folds' +
          (f' and on all {num_train:,} training images'
           if split == 'test' else '')),
      'out_of_sample_accuracy': float(correct.mean()),
      'out_of_sample_accuracy_per_fold': [
          float(correct[fold == k].mean()) for k in range(folds)],
      'counts': _counts(labels, probabilities),
      'csv_columns': ','.join(COLUMNS),
      'top_candidates': [dict(zip(COLUMNS, row)) for row in rows[:NUM_LISTED]],
      'config': config.to_dict(),
  }


@workdir_lib.locks_workdir('label_errors')
def find_label_errors(config: ml_collections.ConfigDict, workdir: str,
                      split: str, folds: int = DEFAULT_FOLDS,
                      method: str = ranking.DEFAULT_METHOD,
                      flip_labels: int = 0) -> dict[str, Any]:
  """Ranks the images of `split` by how likely their label is wrong and
  writes label_errors_{split}.csv, .json and .png into `workdir`.

  `flip_labels` > 0 first replaces that many labels of the split (seeded by
  config.seed) with another class, as an evaluation: the JSON then says how
  many of them each method ranks near the top. Returns the JSON's dict.
  """
  start = time.perf_counter()
  _check_inputs(config, split, method, flip_labels)
  train_split = data_lib.load_split(config, 'train')
  scored = (train_split if split == 'train' else
            data_lib.load_split(config, 'test'))
  fold = folds_lib.fold_ids(scored.labels, folds, config.seed)
  noisy, flipped = ranking.flip_labels(scored.labels, flip_labels, config.seed,
                                       data_lib.NUM_CLASSES)
  always_train = None if split == 'train' else train_split
  _check_fold_size(config, len(scored) - int(np.bincount(fold).max()) +
                   (0 if always_train is None else len(always_train)))
  check_workdir(workdir, config.dataset)
  io_utils.ensure_writable_dir(workdir)
  paths = tuple(io_utils.check_output_paths(workdir, output_names(split)))
  seconds = {'load_data': time.perf_counter() - start}

  probabilities, fold_seconds = folds_lib.out_of_sample_probabilities(
      config, Split(images=scored.images, labels=noisy, index=scored.index),
      fold, always_train)
  seconds.update(fold_seconds)
  rank_start = time.perf_counter()
  score, rank = ranking.label_quality(noisy, probabilities, method)
  order = np.argsort(rank)
  rows = _rows(scored, noisy, probabilities, score, order)
  summary = _summary(config, workdir, scored, split, fold, method, noisy,
                     probabilities, rows, len(train_split))
  if flip_labels:
    summary['synthetic_noise'] = _synthetic_noise(
        scored.labels, flipped, noisy, probabilities, config.seed)
  seconds['rank'] = time.perf_counter() - rank_start
  summary['seconds'] = seconds
  summary['elapsed_seconds'] = time.perf_counter() - start
  if parallel.is_main_process():
    _write(paths, scored, order, rows, summary)
  return summary
