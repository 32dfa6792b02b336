"""The images and features the outlier analysis scores, per feature space.

Pixels need only the images; embeddings are the penultimate activations of
the latest checkpoint in the workdir. The training split is always loaded:
the class-conditional forests are fitted on its images (its embeddings are
computed only to fit on them). The checkpoint is read when there is
one (for its dataset name and, without `data_dir`, its data folder) and
restored for embeddings.
"""

import dataclasses
import os
from typing import Sequence

import ml_collections
import numpy as np

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax.outliers import scores as outliers
from mnist_jax import tta


@dataclasses.dataclass(frozen=True)
class FeatureData:
  """The splits and the features of each analysed feature space."""
  test: data_lib.Split
  train: data_lib.Split
  source: str  # where the images came from, for error messages
  dataset: str | None  # None: IDX files of no known dataset, no checkpoint
  dataset_title: str  # for report titles: says when the files are unknown
  features: dict[str, np.ndarray]  # feature space -> test features [N, D]
  train_features: dict[str, np.ndarray]  # feature space -> train features
  model_probabilities: np.ndarray | None  # [N, 10], with embeddings only


def _config(workdir: str, spaces: Sequence[str], data_dir: str | None):
  """The checkpoint's config (None if there is no checkpoint and none is
  needed) and its restored state when embeddings are analysed."""
  if 'embeddings' in spaces:
    overrides = {} if data_dir is None else {'data_dir': data_dir}
    return evaluate.restore_trained_state(workdir, overrides)
  if data_dir is None or os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
    return checkpoint_lib.read_config(workdir), None
  return None, None


def _load_splits(config: ml_collections.ConfigDict | None,
                 data_dir: str | None
                 ) -> tuple[dict[str, data_lib.Split], str, str | None]:
  """(splits by name, source, dataset name)."""
  if config is not None:
    if data_dir is not None:
      config = ml_collections.ConfigDict(config.to_dict())
      config.data_dir = os.path.expanduser(data_dir)
    splits = {name: data_lib.load_split(config, name)
              for name in data_lib.SPLITS}
    source = (f'data_dir {data_dir!r}' if data_dir is not None else
              f'the checkpoint config (data_dir={config.data_dir!r})')
    return splits, source, config.dataset
  folder = os.path.expanduser(data_dir)
  splits = {name: data_lib.load_idx_split(folder, name)
            for name in data_lib.SPLITS}
  return splits, f'data_dir {data_dir!r}', data_lib.identify(splits['test'])


def load_features(workdir: str, spaces: Sequence[str], fit_on: str,
                  data_dir: str | None) -> FeatureData:
  """Both splits and their features in `spaces`: training pixels always,
  training embeddings only to fit on (`fit_on='train'`)."""
  config, state = _config(workdir, spaces, data_dir)
  splits, source, dataset = _load_splits(config, data_dir)
  features = {name: {} for name in splits}  # split -> feature space -> [N, D]
  model_probabilities = None
  for name, split in splits.items():
    if 'pixels' in spaces:
      features[name]['pixels'] = outliers.pixel_features(split.images)
    if 'embeddings' in spaces and (name == 'test' or fit_on == 'train'):
      # predictions.csv's probabilities come from the test-time views;
      # embeddings are of the plain images.
      views = tta.config_views(config) if name == 'test' else tta.IDENTITY
      outputs = evaluate.predict(state, split, config.eval_batch_size, views)
      features[name]['embeddings'] = outputs['features']
      if name == 'test':
        model_probabilities = outputs['probabilities']
  from_idx = config is None or bool(config.data_dir) or data_dir is not None
  return FeatureData(
      test=splits['test'], train=splits['train'], source=source,
      dataset=dataset,
      dataset_title=data_lib.dataset_title(dataset, splits['test'], from_idx),
      features=features['test'],
      train_features=features['train'],
      model_probabilities=model_probabilities)
