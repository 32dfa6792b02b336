"""The PNG figures of the outlier analysis, one set per feature space.

Figures are built on `matplotlib.figure.Figure`, not pyplot, so no GUI
backend is needed, and each PNG is written atomically.
"""

import math
import os
from typing import Sequence

from matplotlib.figure import Figure
import numpy as np

from mnist_jax import io_utils
from mnist_jax.predictions import Predictions

NUM_TILES = 30
FIGURE_KINDS = ('scores', 'most_anomalous', 'misclassified_outliers',
                'label_errors')


def _save(fig: Figure, path: str) -> None:
  with io_utils.atomic_path(path) as tmp_path:
    fig.savefig(tmp_path, format='png', dpi=100)


def score_histogram(path: str, scores: np.ndarray, misclassified: np.ndarray,
                    title: str) -> None:
  """Densities of the IF score of correct and misclassified images."""
  fig = Figure(figsize=(7, 4))
  ax = fig.subplots()
  bins = np.histogram_bin_edges(scores, bins=50)  # widened if all scores are equal
  for mask, name in ((~misclassified, 'correct'),
                     (misclassified, 'misclassified')):
    if mask.any():
      ax.hist(scores[mask], bins=bins, density=True, alpha=0.55,
              label=f'{name} (n={mask.sum():,})')
  ax.axvline(0, color='black', linestyle='--', label='outlier threshold 0')
  ax.set_xlabel('Isolation Forest score (negative = outlier)')
  ax.set_ylabel('density')
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  _save(fig, path)


def image_grid(path: str, images: np.ndarray, titles: Sequence[str],
               title: str, columns: int = 10) -> None:
  """Images [K, 28, 28, 1] in a grid, each tile with its title."""
  columns = max(1, min(columns, len(images)))
  rows = max(1, math.ceil(len(images) / columns))
  fig = Figure(figsize=(max(1.45 * columns, 6), 1.75 * rows + 0.5))
  axes = np.atleast_1d(fig.subplots(rows, columns)).reshape(-1)
  for ax in axes:
    ax.axis('off')
  for ax, image, tile_title in zip(axes, images, titles):
    ax.imshow(image[..., 0], cmap='gray_r', vmin=0, vmax=255)
    ax.set_title(tile_title, fontsize=7)
  if not len(images):
    axes[0].text(0.5, 0.5, 'none', fontsize=12, ha='center')
  fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def _tile_titles(positions: np.ndarray, predictions: Predictions,
                 values: np.ndarray, name: str) -> list[str]:
  return [f'#{predictions.index[i]} y={predictions.labels[i]} '
          f'p={predictions.predictions[i]}\n{name}={values[i]:.3f}'
          for i in positions]


def figure_names(space: str) -> dict[str, str]:
  """File names of the figures of feature space `space`, by kind."""
  return {kind: f'outliers_{space}_{kind}.png' for kind in FIGURE_KINDS}


def _figure_paths(workdir: str, space: str) -> dict[str, str]:
  return {kind: os.path.join(workdir, name)
          for kind, name in figure_names(space).items()}


def write_figures(workdir: str, space: str, images: np.ndarray,
                  predictions: Predictions,
                  arrays: dict[str, np.ndarray]) -> None:
  """Writes the `figure_names(space)` PNGs into `workdir`.

  `images` [N, 28, 28, 1] and `arrays` (if_score, is_outlier, misclassified,
  suspicion, rank [N]) are in the row order of `predictions`.
  """
  paths = _figure_paths(workdir, space)
  scores = arrays['if_score']
  by_score = np.argsort(scores, kind='stable')
  misclassified_outliers = [i for i in by_score if arrays['misclassified'][i]
                            and arrays['is_outlier'][i]]
  by_rank = np.argsort(arrays['rank'])[:NUM_TILES]
  score_histogram(paths['scores'], scores, arrays['misclassified'],
                  f'Isolation Forest scores, {space}')
  grids = (
      ('most_anomalous', by_score[:NUM_TILES], scores, 'score',
       f'Most anomalous test images ({space}; y=label, p=prediction)'),
      ('misclassified_outliers', np.array(misclassified_outliers[:NUM_TILES],
                                          np.int64), scores, 'score',
       f'Misclassified outliers, most anomalous first ({space}; '
       f'{len(misclassified_outliers)} in all)'),
      ('label_errors', by_rank, arrays['suspicion'], 'susp',
       f'Top label-error / ambiguous candidates ({space})'),
  )
  for kind, positions, values, value_name, title in grids:
    image_grid(paths[kind], images[positions],
               _tile_titles(positions, predictions, values, value_name), title)


def remove_figures(workdir: str, space: str) -> list[str]:
  """Deletes the `figure_names(space)` files in `workdir`; returns their paths.

  For the feature spaces a run did not analyse: their PNGs from an earlier
  run would otherwise be copied into results/ beside the new ones.
  """
  removed = []
  for path in _figure_paths(workdir, space).values():
    if os.path.isfile(path):
      os.remove(path)
      removed.append(path)
  return removed
