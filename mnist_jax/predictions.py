"""predictions.csv: one row per image of a split, in its stable index order.

Columns: index, label, prediction, confidence (the top probability) and the
ten class probabilities prob_0..prob_9. Written by evaluation, read (and
checked against the data and the model) by the outlier analysis. Every
reading error names the file and its line (the header is line 1).
"""

import csv
import dataclasses
import functools

import numpy as np

from mnist_jax import data as data_lib
from mnist_jax import io_utils

COLUMNS = (['index', 'label', 'prediction', 'confidence'] +
           [f'prob_{k}' for k in range(data_lib.NUM_CLASSES)])

# Predictions.csv holds 6 decimals; a larger gap means another checkpoint.
PROBABILITY_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class Predictions:
  """The columns of predictions.csv that the analysis uses."""
  index: np.ndarray  # int64 [N]
  labels: np.ndarray  # int64 [N]
  predictions: np.ndarray  # int64 [N]
  probabilities: np.ndarray  # float64 [N, 10]


def predictions_csv(split: data_lib.Split, probabilities: np.ndarray) -> str:
  """The text of predictions.csv for `split` and its probabilities [N, 10]."""
  rows = zip(split.index, split.labels, probabilities)
  return io_utils.csv_text(COLUMNS, (
      [int(index), int(label), int(probs.argmax()), f'{probs.max():.6f}'] +
      [f'{p:.6f}' for p in probs] for index, label, probs in rows))


def _line(row: int) -> int:
  """The file line of data row `row` (0-based), after the header line."""
  return row + 2


def _reject_rows(path: str, name: str, bad: np.ndarray, problem: str) -> None:
  """Raises on the first row where the bool mask `bad` is set."""
  if bad.any():
    line = _line(int(np.flatnonzero(bad)[0]))
    raise ValueError(f'{path}: line {line}: column {name} {problem}')


def _column(path: str, rows: list[list[str]], header: list[str], name: str,
            integer: bool) -> np.ndarray:
  position = header.index(name)
  texts = [row[position] for row in rows]
  try:
    values = np.array(texts, np.float64)
  except ValueError:
    for row, text in enumerate(texts):
      try:
        float(text)
      except ValueError:
        raise ValueError(f'{path}: line {_line(row)}: column {name} is '
                        f'{text!r}, not a number') from None
    values = np.array([float(text) for text in texts])  # Python's float reads them
  _reject_rows(path, name, ~np.isfinite(values), 'is not finite')
  if not integer:
    return values
  _reject_rows(path, name, values != np.round(values), 'is not an integer')
  return values.astype(np.int64)


def _check_range(path: str, name: str, values: np.ndarray, low: float,
                 high: float) -> None:
  bad = np.flatnonzero((values < low) | (values > high))
  if bad.size:
    raise ValueError(f'{path}: line {_line(bad[0])}: {name} {values[bad[0]]} '
                    f'is outside {low}-{high} ({bad.size} such rows)')


def _read_rows(path: str) -> tuple[list[str], list[list[str]]]:
  """The header and data rows, each row as long as the header."""
  try:
    with open(path, newline='') as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f'{path}: cannot read as CSV: {e}') from None
  expected = ','.join(COLUMNS)
  if not rows:
    raise ValueError(f'{path}: empty file, expected the header {expected}')
  header, rows = [name.strip() for name in rows[0]], rows[1:]
  missing = [c for c in COLUMNS if c not in header]
  if missing:
    raise ValueError(f'{path}: missing columns {", ".join(missing)} (expected '
                    f'{expected})')
  if not rows:
    raise ValueError(f'{path}: no rows after the header')
  for row, fields in enumerate(rows):
    if len(fields) != len(header):
      raise ValueError(f'{path}: line {_line(row)} has {len(fields)} fields, '
                      f'the header has {len(header)}')
  return header, rows


def read_predictions(path: str) -> Predictions:
  """Reads and checks predictions.csv as written by scripts/evaluate.py."""
  io_utils.require_file(path, 'predictions file (write it with '
                        'scripts/evaluate.py)')
  header, rows = _read_rows(path)
  column = functools.partial(_column, path, rows, header)
  labels = column('label', integer=True)
  predictions = column('prediction', integer=True)
  probabilities = np.stack([column(f'prob_{k}', integer=False)
                            for k in range(data_lib.NUM_CLASSES)], axis=-1)
  last_class = data_lib.NUM_CLASSES - 1
  _check_range(path, 'label', labels, 0, last_class)
  _check_range(path, 'prediction', predictions, 0, last_class)
  for k in range(data_lib.NUM_CLASSES):
    _check_range(path, f'prob_{k}', probabilities[:, k], 0, 1)
  _check_range(path, 'probability sum', probabilities.sum(-1), 0.99, 1.01)
  return Predictions(index=column('index', integer=True), labels=labels,
                     predictions=predictions, probabilities=probabilities)


def check_against_split(path: str, predictions: Predictions,
                        split: data_lib.Split, source: str) -> None:
  """Checks that predictions.csv describes `split`, row by row."""
  if len(predictions.index) != len(split):
    raise ValueError(f'{path} has {len(predictions.index):,} rows but the test '
                    f'split from {source} has {len(split):,} images')
  for name, ours, theirs in (('index', predictions.index, split.index),
                             ('label', predictions.labels, split.labels)):
    bad = np.flatnonzero(ours != theirs)
    if bad.size:
      raise ValueError(
          f'{path}: column {name} differs from the test split from {source} '
          f'at {bad.size:,} rows (first at line {_line(bad[0])}: '
          f'{ours[bad[0]]} vs {theirs[bad[0]]}); were the predictions made '
          'on other data?')


def check_against_model(path: str, predictions: Predictions,
                        model_probabilities: np.ndarray) -> None:
  """Checks that predictions.csv came from the checkpoint the embeddings do."""
  gap = np.abs(model_probabilities - predictions.probabilities).max(-1)
  bad = np.flatnonzero(gap > PROBABILITY_TOLERANCE)
  if bad.size:
    raise ValueError(
        f'{path}: probabilities differ from the latest checkpoint\'s at '
        f'{bad.size:,} rows (first at line {_line(bad[0])}); rerun '
        'scripts/evaluate.py so predictions and embeddings come from the same '
        'checkpoint')
