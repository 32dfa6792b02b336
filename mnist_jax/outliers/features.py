"""The images and features the outlier analysis scores, per feature space.

Pixels need only the images; embeddings are the penultimate activations of
the latest checkpoint in the workdir. The checkpoint is read only when
needed: for embeddings, or for its data_dir when none is given.
"""

import dataclasses
import functools
import os
from typing import Sequence

import numpy as np

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax.outliers import scores as outliers
from mnist_jax import tta


@dataclasses.dataclass(frozen=True)
class FeatureData:
  """The test split and the features of each analysed feature space."""
  test: data_lib.Split
  source: str  # where the images came from, for error messages
  features: dict[str, np.ndarray]  # feature space -> test features [N, D]
  fit_features: dict[str, np.ndarray | None]  # None: fit on the test features
  num_fit_images: int
  model_probabilities: np.ndarray | None  # [N, 10], with embeddings only


def load_features(workdir: str, spaces: Sequence[str], fit_on: str,
                  data_dir: str | None) -> FeatureData:
  """The test split (and the `fit_on` split) and their features in `spaces`."""
  overrides = {} if data_dir is None else {'data_dir': data_dir}
  state = None
  if 'embeddings' in spaces:
    config, state = evaluate.restore_trained_state(workdir, overrides)
  elif data_dir is None:
    config = checkpoint_lib.read_config(workdir)
  if data_dir is None:
    source = f'the checkpoint config (data_dir={config.data_dir!r})'
    load = functools.partial(data_lib.load_split, config)
  else:
    source = f'data_dir {data_dir!r}'
    load = functools.partial(data_lib.load_idx_split,
                             os.path.expanduser(data_dir))
  splits = {'test': load('test')}
  if fit_on != 'test':
    splits[fit_on] = load(fit_on)
  features = {name: {} for name in splits}  # split -> feature space -> [N, D]
  model_probabilities = None
  for name, split in splits.items():
    if 'pixels' in spaces:
      features[name]['pixels'] = outliers.pixel_features(split.images)
    if 'embeddings' in spaces:
      # predictions.csv's probabilities come from the test-time views;
      # the fit split needs features only, which are of the plain images.
      views = tta.config_views(config) if name == 'test' else tta.IDENTITY
      outputs = evaluate.predict(state, split, config.eval_batch_size, views)
      features[name]['embeddings'] = outputs['features']
      if name == 'test':
        model_probabilities = outputs['probabilities']
  return FeatureData(
      test=splits['test'], source=source, features=features['test'],
      fit_features={space: None if fit_on == 'test' else
                    features[fit_on][space] for space in features['test']},
      num_fit_images=len(splits[fit_on]),
      model_probabilities=model_probabilities)
