"""The outlier analysis of a workdir: are misclassified test images outliers?

Reads W/predictions.csv (from scripts/evaluate.py) and the test images, runs
Isolation Forest in each requested feature space (raw pixels, and the model's
penultimate features from the latest checkpoint), and writes:

- W/outliers.csv: one row per test image, in predictions.csv order: index,
  label, prediction, correct (1/0), if_score, is_outlier (1/0), suspicion and
  rank (1 = most likely a label error or ambiguous), in the primary feature
  space named in outliers.json.
- W/outliers.json: per feature space, the 2x2 table misclassified x outlier
  with rates, odds ratio and CI, Fisher p-values, the same per true class, the
  one-sentence answer and the top candidates; the parameters and timings.
  Non-finite numbers are written as the strings "inf", "-inf" and "nan".
- W/report.md and the PNG figures it shows, beside it, rendered from the same
  dict as outliers.json. The figures of a feature space not analysed in this
  run are removed, so W/*.png is always this run's.

Every input is checked before anything is written. With several processes
all of them compute and only process 0 writes.
"""

import math
import os
import time
from typing import Any, Sequence

import numpy as np

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import evaluate
from mnist_jax import io_utils
from mnist_jax import parallel
from mnist_jax import predictions as predictions_io
from mnist_jax.outliers import features as outlier_features
from mnist_jax.outliers import figures
from mnist_jax.outliers import report
from mnist_jax.outliers import scores as outliers
from mnist_jax.predictions import Predictions

FEATURE_SPACES = ('pixels', 'embeddings')
FIT_SETS = ('test', 'train')
# Written beside the figures.
TABLE_AND_REPORT_NAMES = ('outliers.csv', 'report.md', 'outliers.json')
OUTLIER_COLUMNS = ('index', 'label', 'prediction', 'correct', 'if_score',
                   'is_outlier', 'suspicion', 'rank')
NUM_LISTED = 20
QUESTION = ('Of the misclassified test images, how many are Isolation Forest '
            'outliers, is that more than chance, and which images look like '
            'label errors or are ambiguous?')


# -------------------------------------------------------------- parameters


def parse_contamination(text: str | float) -> str | float:
  """'auto' or a float in (0, 0.5], as IsolationForest accepts."""
  if text == 'auto':
    return 'auto'
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not 0 < value <= 0.5:
    raise ValueError(f"contamination: expected 'auto' or a number in "
                    f'(0, 0.5], got {text!r}')
  return value


def feature_spaces(features: str) -> tuple[str, ...]:
  """The feature spaces named by features (one of them, or 'both')."""
  if features == 'both':
    return FEATURE_SPACES
  if features not in FEATURE_SPACES:
    raise ValueError(f'features: expected pixels, embeddings or both, got '
                    f'{features!r}')
  return (features,)


def _check_parameters(fit_on: str, n_estimators: int, max_samples: int,
                      seed: int, spaces: Sequence[str],
                      primary: str | None) -> None:
  if fit_on not in FIT_SETS:
    raise ValueError(f'fit_on: expected test or train, got {fit_on!r}')
  for flag, value in (('n_estimators', n_estimators),
                      ('max_samples', max_samples)):
    if value < 1:
      raise ValueError(f'{flag}: must be a positive integer, got {value}')
  if not 0 <= seed < 2**32:
    raise ValueError(f'seed: must be in [0, 2**32), got {seed}')
  if primary is not None and primary not in spaces:
    raise ValueError(f'primary: {primary!r} is not among the analysed '
                    f'feature spaces ({", ".join(spaces)})')


# ---------------------------------------------------------------- analysis


def _image_entry(i: int, predictions: Predictions, scores: np.ndarray,
                 ranking: dict[str, np.ndarray]) -> dict[str, Any]:
  return {
      'index': int(predictions.index[i]),
      'label': int(predictions.labels[i]),
      'prediction': int(predictions.predictions[i]),
      'p_label': float(ranking['p_label'][i]),
      'p_prediction': float(predictions.probabilities[i].max()),
      'if_score': float(scores[i]),
      'suspicion': float(ranking['suspicion'][i]),
      'rank': int(ranking['rank'][i]),
  }


def analyze_space(space: str, features: np.ndarray,
                  fit_features: np.ndarray | None, predictions: Predictions,
                  params: dict[str, Any]) -> tuple[dict[str, Any],
                                                   dict[str, np.ndarray]]:
  """The summary dict and per-image arrays of one feature space."""
  start = time.perf_counter()
  scores, is_outlier = outliers.isolation_forest_scores(
      features, fit_features, n_estimators=params['n_estimators'],
      max_samples=params['max_samples'],
      contamination=params['contamination'], seed=params['seed'])
  misclassified = predictions.predictions != predictions.labels
  overall = outliers.table_statistics(
      outliers.contingency_table(misclassified, is_outlier))
  ranking = outliers.label_error_candidates(
      predictions.labels, predictions.probabilities, scores,
      params['outlier_weight'])
  by_rank = np.argsort(ranking['rank'])
  by_score = np.argsort(scores, kind='stable')
  summary = {
      'feature_space': space,
      'feature_dim': int(features.shape[1]),
      'fit_on': params['fit_on'],
      'answer': outliers.answer_sentence(overall),
      'overall': overall,
      'score_separation': outliers.score_separation(scores, misclassified),
      'per_class': outliers.per_class_statistics(
          predictions.labels, misclassified, is_outlier),
      'if_score_quantiles': {
          q: float(np.quantile(scores, float(q)))
          for q in ('0.0', '0.01', '0.05', '0.5', '0.95', '1.0')},
      'top_label_error_candidates': [
          _image_entry(i, predictions, scores, ranking)
          for i in by_rank[:NUM_LISTED]],
      'most_anomalous': [_image_entry(i, predictions, scores, ranking)
                         for i in by_score[:NUM_LISTED]],
      'seconds': time.perf_counter() - start,
  }
  arrays = {'if_score': scores, 'is_outlier': is_outlier,
            'misclassified': misclassified, **ranking}
  return summary, arrays


def json_safe(value: Any) -> Any:
  """`value` with numpy scalars as Python numbers and inf/nan as strings."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else str(value)
  return value


def outliers_csv(predictions: Predictions,
                 arrays: dict[str, np.ndarray]) -> str:
  """outliers.csv: OUTLIER_COLUMNS, one row per image of `predictions`."""
  return io_utils.csv_text(OUTLIER_COLUMNS, (
      [int(predictions.index[i]), int(predictions.labels[i]),
       int(predictions.predictions[i]), int(not arrays['misclassified'][i]),
       f'{arrays["if_score"][i]:.6f}', int(arrays['is_outlier'][i]),
       f'{arrays["suspicion"][i]:.6f}', int(arrays['rank'][i])]
      for i in range(len(predictions.index))))


def _summary(workdir: str, predictions: Predictions, primary: str,
             params: dict[str, Any], analyses: dict[str, dict[str, Any]],
             seconds: dict[str, float], elapsed: float) -> dict[str, Any]:
  """The dict of outliers.json (and report.md), JSON-safe."""
  return json_safe({
      'question': QUESTION,
      'workdir': os.path.abspath(workdir),
      'num_test_images': len(predictions.index),
      'answers': {space: analysis['answer']
                  for space, analysis in analyses.items()},
      'primary_feature_space': primary,
      'outliers_csv': f'outliers.csv holds the {primary} scores; columns '
                      f'{",".join(OUTLIER_COLUMNS)}; correct and is_outlier '
                      'are 1/0; rank 1 = most suspicious',
      'parameters': params,
      'sign_convention': outliers.SIGN_CONVENTION,
      'odds_ratio_method': outliers.ODDS_RATIO_METHOD,
      'p_value_method': outliers.P_VALUE_METHOD,
      'ranking_rule': outliers.RANKING_RULE,
      'table_layout': ('table = [[misclassified outliers, misclassified '
                       'inliers], [correct outliers, correct inliers]]'),
      'non_finite_numbers': 'written as the strings "inf", "-inf", "nan"',
      'analyses': analyses,
      'figures': {space: figures.figure_names(space) for space in analyses},
      'seconds': seconds,
      'elapsed_seconds': elapsed,
  })


# ------------------------------------------------------------------- entry


def run_outlier_analysis(
    workdir: str,
    features: str = 'both',
    fit_on: str = 'test',
    n_estimators: int = outliers.DEFAULT_N_ESTIMATORS,
    max_samples: int = outliers.DEFAULT_MAX_SAMPLES,
    contamination: str | float = outliers.DEFAULT_CONTAMINATION,
    seed: int = 0,
    data_dir: str | None = None,
    primary: str | None = None,
) -> dict[str, Any]:
  """Writes outliers.csv, outliers.json, report.md and figures into `workdir`.

  Returns the dict written to outliers.json. Pixels need no checkpoint when
  `data_dir` is given; embeddings always read the latest checkpoint. Every
  process computes the result; only process 0 writes the files.
  """
  start = time.perf_counter()
  spaces = feature_spaces(features)
  contamination = parse_contamination(contamination)
  _check_parameters(fit_on, n_estimators, max_samples, seed, spaces, primary)
  primary = primary or spaces[0]
  predictions_path = os.path.join(workdir, 'predictions.csv')
  predictions = predictions_io.read_predictions(predictions_path)
  io_utils.ensure_writable_dir(workdir)
  # Every input and output path is checked before the minutes of work, so
  # that a bad one stops the run before any file of the set is written over.
  csv_path, report_path, json_path, *_ = io_utils.check_output_paths(
      workdir, TABLE_AND_REPORT_NAMES + tuple(
          name for space in spaces for name in figures.figure_names(space).values()))
  if data_dir is not None or os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
    evaluate.check_data_dir(workdir, data_dir)
  data = outlier_features.load_features(workdir, spaces, fit_on, data_dir)
  predictions_io.check_against_split(predictions_path, predictions, data.test,
                                     data.source)
  if data.model_probabilities is not None:
    predictions_io.check_against_model(predictions_path, predictions,
                                       data.model_probabilities)
  seconds = {'load_data_and_embeddings': time.perf_counter() - start}
  params = {'feature_spaces': list(spaces), 'fit_on': fit_on,
            'num_fit_images': data.num_fit_images,
            'n_estimators': n_estimators, 'max_samples': max_samples,
            'contamination': contamination, 'seed': seed,
            'outlier_weight': outliers.DEFAULT_OUTLIER_WEIGHT,
            'data_source': data.source}
  analyses, arrays = {}, {}
  for space in spaces:
    analyses[space], arrays[space] = analyze_space(
        space, data.features[space], data.fit_features[space], predictions,
        params)
    seconds[f'isolation_forest_and_statistics_{space}'] = (
        analyses[space]['seconds'])
  writes = parallel.is_main_process()
  figure_start = time.perf_counter()
  if writes:
    for space in spaces:
      figures.write_figures(workdir, space, data.test.images, predictions,
                            arrays[space])
  seconds['figures'] = time.perf_counter() - figure_start
  summary = _summary(workdir, predictions, primary, params, analyses, seconds,
                     elapsed=time.perf_counter() - start)
  if writes:
    io_utils.write_text(csv_path, outliers_csv(predictions, arrays[primary]))
    io_utils.write_text(report_path, report.report_markdown(summary))
    io_utils.write_json(json_path, summary)
    for space in FEATURE_SPACES:
      if space not in spaces:
        figures.remove_figures(workdir, space)
  return summary
