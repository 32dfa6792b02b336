"""The PNG figures of report.md: accuracy and calibration, then outliers.

Figures are built on `matplotlib.figure.Figure`, not pyplot, so no GUI
backend is needed, and each PNG is written atomically. A grid with no image
to show is not drawn: the report says so in a sentence instead.
"""

import math
import os
from typing import Any, Sequence

from matplotlib import colors
from matplotlib.figure import Figure
import numpy as np

from mnist_jax import io_utils
from mnist_jax.predictions import Predictions

NUM_TILES = 30
MAX_MISCLASSIFIED_TILES = 200
POOLED_KINDS = ('scores', 'most_anomalous', 'misclassified_outliers',
                'label_errors')
CONDITIONAL_KINDS = ('scores', 'misclassified_outliers')
ACCURACY_FIGURES = {
    'training_curves': 'training_curves.png',
    'confusion_matrix': 'confusion_matrix.png',
    'misclassified': 'misclassified.png',
    'reliability': 'reliability.png',
}
INK_FIGURE = 'outliers_pixels_ink.png'
# Image grids: a 28-pixel image and its two-line title in a 40 x 48 cell,
# drawn at 1.45 inches per cell width, with room for the title above.
_TITLE_ROWS, _GAP = 20, 12
_INCHES_PER_PIXEL = 1.45 / 40
_HEADER_INCHES = 0.5


def _save(fig: Figure, path: str) -> None:
  with io_utils.atomic_path(path) as tmp_path:
    fig.savefig(tmp_path, format='png', dpi=100)


def score_histogram(path: str, scores: np.ndarray, misclassified: np.ndarray,
                    title: str, threshold: float = 0.0,
                    xlabel: str = 'Isolation Forest score (negative = outlier)'
                    ) -> None:
  """Densities of the scores of correct and misclassified images."""
  fig = Figure(figsize=(7, 4))
  ax = fig.subplots()
  # numpy widens the range when all scores are equal.
  bins = np.histogram_bin_edges(scores, bins=50)
  for mask, name in ((~misclassified, 'correct'),
                     (misclassified, 'misclassified')):
    if mask.any():
      ax.hist(scores[mask], bins=bins, density=True, alpha=0.55,
              label=f'{name} (n={mask.sum():,})')
  ax.axvline(threshold, color='black', linestyle='--',
             label=f'outlier threshold {threshold:.3g}')
  ax.set_xlabel(xlabel)
  ax.set_ylabel('density')
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  _save(fig, path)


def image_grid(path: str, images: np.ndarray, titles: Sequence[str],
               title: str, columns: int = 10) -> None:
  """Images [K > 0, 28, 28, 1] in a grid, each tile with its title.

  One mosaic image on one axes: a hundred tiles as a hundred axes take
  seconds to lay out.
  """
  if not len(images):
    raise ValueError(f'{path}: no images to draw')
  columns = min(columns, len(images))
  rows = math.ceil(len(images) / columns)
  height, width = images.shape[1:3]
  cell_height, cell_width = height + _TITLE_ROWS, width + _GAP
  mosaic = np.zeros((rows * cell_height, columns * cell_width))
  grid_inches = (columns * cell_width * _INCHES_PER_PIXEL,
                 rows * cell_height * _INCHES_PER_PIXEL)
  fig = Figure(figsize=(max(grid_inches[0], 6), grid_inches[1] + _HEADER_INCHES))
  ax = fig.add_axes((0, 0, 1, grid_inches[1] / (grid_inches[1] + _HEADER_INCHES)))
  for position, (image, tile_title) in enumerate(zip(images, titles)):
    row, column = divmod(position, columns)
    top, left = row * cell_height + _TITLE_ROWS, column * cell_width + _GAP // 2
    mosaic[top:top + height, left:left + width] = image[..., 0]
    ax.text(left + width / 2, top - 1, tile_title, ha='center', va='bottom',
            fontsize=7)
  ax.imshow(mosaic, cmap='gray_r', vmin=0, vmax=255, interpolation='nearest')
  ax.axis('off')
  fig.suptitle(title, y=1 - 0.1 / fig.get_figheight(), va='top')
  _save(fig, path)


# ------------------------------------------------------------------ accuracy


def training_curves(path: str, records: list[dict[str, Any]]) -> None:
  """Loss and accuracy per epoch, training and test, from metrics.jsonl."""
  epochs = [r['epoch'] for r in records]
  fig = Figure(figsize=(10, 3.8))
  loss_ax, accuracy_ax = fig.subplots(1, 2)
  for ax, metric in ((loss_ax, 'loss'), (accuracy_ax, 'accuracy')):
    for split in ('train', 'test'):
      key = f'{split}_{metric}'
      ax.plot(epochs, [r.get(key, np.nan) for r in records], marker='o',
              markersize=3, label=split)
    ax.set_xlabel('epoch')
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
  loss_ax.set_yscale('log')
  accuracy_ax.set_title('accuracy (train: live weights on augmented images)',
                        fontsize=9)
  loss_ax.set_title('cross-entropy', fontsize=9)
  fig.tight_layout()
  _save(fig, path)


def confusion_matrix(path: str, matrix: np.ndarray,
                     class_names: Sequence[str]) -> None:
  """Counts by true label (rows) and prediction (columns), log colour."""
  matrix = np.asarray(matrix)
  fig = Figure(figsize=(7.5, 6.5))
  ax = fig.subplots()
  image = ax.imshow(matrix + 1, cmap='Blues', norm=colors.LogNorm())
  for (i, j), count in np.ndenumerate(matrix):
    if count:
      ax.text(j, i, f'{count:,}', ha='center', va='center', fontsize=7,
              color='white' if i == j else 'black')
  ticks = np.arange(len(class_names))
  ax.set_xticks(ticks, class_names, rotation=45 if len(
      max(class_names, key=len)) > 2 else 0, ha='right', fontsize=8)
  ax.set_yticks(ticks, class_names, fontsize=8)
  ax.set_xlabel('prediction')
  ax.set_ylabel('true label')
  ax.set_title('Confusion matrix (counts; colour: log scale)')
  fig.colorbar(image, ax=ax, label='count + 1')
  fig.tight_layout()
  _save(fig, path)


def reliability_diagram(path: str, reliability: dict[str, Any]) -> None:
  """Accuracy against confidence per bin, and the images per bin."""
  bins = reliability['bins']
  fig = Figure(figsize=(6, 6.5))
  top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
  lows = [b['low'] for b in bins]
  widths = [b['high'] - b['low'] for b in bins]
  top.bar(lows, [b['accuracy'] for b in bins], width=widths, align='edge',
          edgecolor='black', alpha=0.7, label='accuracy')
  top.plot([b['confidence'] for b in bins], [b['confidence'] for b in bins],
           'r_', markersize=14, label='mean confidence')
  top.plot([0, 1], [0, 1], 'k--', linewidth=0.8)
  top.set_ylabel('accuracy')
  top.set_ylim(0, 1.02)
  top.legend(loc='upper left')
  top.set_title(f'Reliability, {reliability["num_bins"]} bins: expected '
                f'calibration error {reliability["ece"]:.4f}')
  bottom.bar(lows, [b['count'] for b in bins], width=widths, align='edge',
             edgecolor='black', alpha=0.7)
  bottom.set_yscale('log')
  bottom.set_xlabel('confidence (top probability)')
  bottom.set_ylabel('images')
  bottom.set_xlim(0, 1)
  fig.tight_layout()
  _save(fig, path)


def _tile_title(i: int, predictions: Predictions, class_names: Sequence[str],
                value: float, name: str) -> str:
  return (f'#{predictions.index[i]} {class_names[predictions.labels[i]]}'
          f'\u2192{class_names[predictions.predictions[i]]}\n{name}={value:.3f}')


def write_accuracy_figures(workdir: str, records: list[dict[str, Any]],
                           accuracy: dict[str, Any], images: np.ndarray,
                           predictions: Predictions,
                           class_names: Sequence[str]) -> dict[str, str]:
  """The ACCURACY_FIGURES that have something to show; returns them."""
  written = {}
  path = lambda kind: os.path.join(workdir, ACCURACY_FIGURES[kind])
  if records:
    training_curves(path('training_curves'), records)
    written['training_curves'] = ACCURACY_FIGURES['training_curves']
  confusion_matrix(path('confusion_matrix'), accuracy['confusion_matrix'],
                   class_names)
  written['confusion_matrix'] = ACCURACY_FIGURES['confusion_matrix']
  confidence = predictions.probabilities.max(-1)
  wrong = np.flatnonzero(predictions.predictions != predictions.labels)
  wrong = wrong[np.argsort(-confidence[wrong], kind='stable')]
  if len(wrong):
    shown = wrong[:MAX_MISCLASSIFIED_TILES]
    more = (f', the {len(shown)} most confident shown'
            if len(shown) < len(wrong) else '')
    image_grid(path('misclassified'), images[shown],
               [_tile_title(i, predictions, class_names, confidence[i], 'conf')
                for i in shown],
               f'Misclassified test images ({len(wrong):,}{more}; label\u2192'
               'prediction, confidence), most confident first')
    written['misclassified'] = ACCURACY_FIGURES['misclassified']
  reliability_diagram(path('reliability'), accuracy['reliability'])
  written['reliability'] = ACCURACY_FIGURES['reliability']
  return written


# ------------------------------------------------------------------ outliers


def ink_scatter(path: str, ink: np.ndarray, scores: np.ndarray,
                labels: np.ndarray, class_names: Sequence[str],
                spearman: float) -> None:
  """The pooled pixel score against total ink, coloured by class."""
  fig = Figure(figsize=(7, 5))
  ax = fig.subplots()
  for k, name in enumerate(class_names):
    members = labels == k
    ax.scatter(ink[members], scores[members], s=2, alpha=0.5, label=name)
  ax.axhline(0, color='black', linestyle='--', linewidth=0.8)
  ax.set_xlabel('total ink (sum of pixel values / 255)')
  ax.set_ylabel('pooled pixel forest score (negative = outlier)')
  ax.set_title(f'Pooled pixel forest score against ink: Spearman {spearman:.2f}')
  ax.legend(markerscale=5, fontsize=7, ncols=2)
  fig.tight_layout()
  _save(fig, path)


def figure_names(detector: str) -> dict[str, str]:
  """File names of the outlier figures of `detector`, by kind."""
  pooled = detector in ('pixels', 'embeddings')
  kinds = POOLED_KINDS if pooled else CONDITIONAL_KINDS
  names = {kind: f'outliers_{detector}_{kind}.png' for kind in kinds}
  if detector == 'pixels':
    names['ink'] = INK_FIGURE
  return names


def write_figures(workdir: str, detector: str, images: np.ndarray,
                  predictions: Predictions, arrays: dict[str, np.ndarray],
                  class_names: Sequence[str]) -> dict[str, str]:
  """Writes the `figure_names(detector)` PNGs that have something to show
  into `workdir` and returns them.

  `images` [N, 28, 28, 1] and `arrays` (score, threshold, is_outlier,
  misclassified, and for the pooled spaces suspicion and rank [N]; for
  pixels ink and spearman_ink) are in the row order of `predictions`.
  """
  names = figure_names(detector)
  path = lambda kind: os.path.join(workdir, names[kind])
  scores = arrays['score']
  by_score = np.argsort(scores, kind='stable')
  misclassified_outliers = np.array(
      [i for i in by_score if arrays['misclassified'][i]
       and arrays['is_outlier'][i]], np.int64)
  score_histogram(path('scores'), scores, arrays['misclassified'],
                  f'Outlier scores: {detector}', threshold=arrays['threshold'],
                  xlabel='score (lower = more anomalous)')
  written = {'scores': names['scores']}
  grids = [('misclassified_outliers', misclassified_outliers[:NUM_TILES],
            scores, 'score',
            f'Misclassified outliers, most anomalous first ({detector}; '
            f'{len(misclassified_outliers)} in all)')]
  if 'rank' in arrays:
    grids += [
        ('most_anomalous', by_score[:NUM_TILES], scores, 'score',
         f'Most anomalous test images ({detector}; label\u2192prediction)'),
        ('label_errors', np.argsort(arrays['rank'])[:NUM_TILES],
         arrays['suspicion'], 'susp',
         f'Top label-error / ambiguous candidates ({detector})')]
  for kind, positions, values, value_name, title in grids:
    if len(positions):
      image_grid(path(kind), images[positions],
                 [_tile_title(i, predictions, class_names, values[i], value_name)
                  for i in positions], title)
      written[kind] = names[kind]
  if 'ink' in names:
    ink_scatter(path('ink'), arrays['ink'], scores, predictions.labels,
                class_names, arrays['spearman_ink'])
    written['ink'] = names['ink']
  return written


def remove_stale(workdir: str, candidates: Sequence[str],
                 written: Sequence[str]) -> list[str]:
  """Deletes the `candidates` in `workdir` this run did not write (figures
  of an earlier run, which would otherwise be copied into results/)."""
  removed = []
  for name in sorted(set(candidates) - set(written)):
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      os.remove(path)
      removed.append(path)
  return removed
