"""The outlier analysis of a workdir: are misclassified test images outliers?

Reads W/predictions.csv (from scripts/evaluate.py), the test and training
images and, for embeddings, the latest checkpoint, and asks the question
with five detectors (docs/outliers.md):

- `pixels`, `embeddings`: one Isolation Forest on all images (pooled), the
  original project's question. In pixel space it mostly measures ink, which
  depends on the class, so its table mixes "misclassified" with "which
  class"; the Spearman correlation of its score with total ink says how much;
- `pixels_by_label`, `pixels_by_prediction`: a forest per class, fitted on
  the training images of that class, scoring each test image against its
  labelled and its predicted class;
- `embeddings_knn`: the mean distance to the nearest other embeddings (of
  the test images, or with fit_on='train' of the training images), as
  cleanlab's Datalab scores outliers.

For each: the misclassified x outlier table, the same stratified by class
(Mantel-Haenszel, exact conditional test) and per class with
Benjamini-Hochberg p-values. The headline answer follows the first of
ANSWER_DETECTORS analysed, which are free of the class confound.

Writes W/outliers.csv (the pooled scores of the primary feature space and
the label-error ranking, one row per test image), W/outliers.json, and
W/report.md with its figures (accuracy, calibration, outliers), rendered from
the same dict. Every input is checked before anything is written; with
several processes all of them compute and only process 0 writes.
"""

import math
import os
import time
from typing import Any, Sequence

import numpy as np
import scipy.stats

from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax import io_utils
from mnist_jax import metrics_log
from mnist_jax import parallel
from mnist_jax import workdir as workdir_lib
from mnist_jax import predictions as predictions_io
from mnist_jax.outliers import accuracy as accuracy_lib
from mnist_jax.outliers import conditional
from mnist_jax.outliers import features as outlier_features
from mnist_jax.outliers import figures
from mnist_jax.outliers import report
from mnist_jax.outliers import scores as outliers
from mnist_jax.outliers import stratified
from mnist_jax.predictions import Predictions

FEATURE_SPACES = ('pixels', 'embeddings')
FIT_SETS = ('test', 'train')
DETECTORS = {
    'pixels': ('pixels', 'pooled pixel forest: one Isolation Forest on the raw '
               'pixels of the {fit_on} images'),
    'pixels_by_label': ('pixels', 'class-conditional pixel forest, labelled '
                        'class: each test image scored by the forest fitted on '
                        'the training images of its label'),
    'pixels_by_prediction': ('pixels', 'class-conditional pixel forest, '
                             'predicted class: each test image scored by the '
                             'forest fitted on the training images of the '
                             'class the model predicts'),
    'embeddings': ('embeddings', 'pooled embedding forest: one Isolation '
                   'Forest on the penultimate features of the {fit_on} images'),
    'embeddings_knn': ('embeddings', 'kNN in embedding space (as cleanlab '
                       "Datalab): mean cosine distance to the {k} nearest "
                       'other {fit_on} embeddings'),
}
# The analyses free of the class confound, in order of preference for the
# headline answer.
ANSWER_DETECTORS = ('pixels_by_label', 'embeddings_knn')
SIGNIFICANCE = 0.05
TABLE_AND_REPORT_NAMES = ('outliers.csv', 'report.md', 'outliers.json')
OUTLIER_COLUMNS = ('index', 'label', 'prediction', 'correct', 'if_score',
                   'is_outlier', 'suspicion', 'rank')
NUM_LISTED = 20
QUESTION = ('Of the misclassified test images, how many are outliers, is '
            'that more than chance once the class is accounted for, and which '
            'images look like label errors or are ambiguous?')


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


def detectors(spaces: Sequence[str]) -> tuple[str, ...]:
  return tuple(name for name, (space, _) in DETECTORS.items() if space in spaces)


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


# ----------------------------------------------------------------- scoring


def detector_scores(name: str, data: outlier_features.FeatureData,
                    predictions: Predictions, params: dict[str, Any],
                    forests: list[Any] | None) -> tuple[np.ndarray, np.ndarray,
                                                        float, dict[str, Any]]:
  """(score, is_outlier, threshold, details) of detector `name`; lower
  scores are more anomalous, is_outlier = score < threshold. `forests` are
  the class forests of the pixel detectors per class."""
  space = DETECTORS[name][0]
  test = data.features[space]
  reference = (data.train_features.get(space)
               if params['fit_on'] == 'train' else None)
  if name in FEATURE_SPACES:
    scores, is_outlier = outliers.isolation_forest_scores(
        test, reference, n_estimators=params['n_estimators'],
        max_samples=params['max_samples'],
        contamination=params['contamination'], seed=params['seed'])
    return scores, is_outlier, 0.0, {}
  if name in ('pixels_by_label', 'pixels_by_prediction'):
    classes = (predictions.labels if name == 'pixels_by_label' else
               predictions.predictions)
    scores, is_outlier = conditional.class_forest_scores(forests, test, classes)
    return scores, is_outlier, 0.0, {}
  scores, is_outlier, details = conditional.knn_scores(
      test, reference, k=params['neighbors'],
      contamination=params['knn_contamination'], seed=params['seed'])
  threshold = math.exp(-details['outlier_distance'] /
                       details['median_reference_distance'])
  return scores, is_outlier, threshold, details


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


def spearman(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
  result = scipy.stats.spearmanr(a, b)
  return {'rho': float(result.statistic), 'p': float(result.pvalue)}


def analyze_detector(name: str, data: outlier_features.FeatureData,
                     predictions: Predictions, ink: np.ndarray,
                     params: dict[str, Any], forests: list[Any] | None
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """The summary dict and per-image arrays of one detector."""
  start = time.perf_counter()
  space, description = DETECTORS[name]
  scores, is_outlier, threshold, details = detector_scores(
      name, data, predictions, params, forests)
  misclassified = predictions.predictions != predictions.labels
  overall = outliers.table_statistics(
      outliers.contingency_table(misclassified, is_outlier))
  summary = {
      'detector': name,
      'description': description.format(fit_on=params['fit_on'],
                                        k=params['neighbors']),
      'feature_space': space,
      'feature_dim': int(data.features[space].shape[1]),
      'answer': outliers.answer_sentence(overall),
      'overall': overall,
      'stratified': stratified.stratified_statistics(
          predictions.labels, misclassified, is_outlier),
      'stratified_class_and_ink': stratified.stratified_statistics(
          stratified.class_and_ink_strata(predictions.labels, ink),
          misclassified, is_outlier),
      'score_separation': outliers.score_separation(scores, misclassified),
      'spearman_ink': spearman(scores, ink),
      'per_class': stratified.with_adjusted_p_values(
          outliers.per_class_statistics(predictions.labels, misclassified,
                                        is_outlier)),
      'threshold': threshold,
      'score_quantiles': {q: float(np.quantile(scores, float(q)))
                          for q in ('0.0', '0.01', '0.05', '0.5', '0.95', '1.0')},
      **details,
  }
  arrays = {'score': scores, 'is_outlier': is_outlier, 'threshold': threshold,
            'misclassified': misclassified}
  if name in FEATURE_SPACES:
    summary['fit_on'] = params['fit_on']
    ranking = outliers.label_error_candidates(
        predictions.labels, predictions.probabilities, scores,
        params['outlier_weight'])
    summary['top_label_error_candidates'] = [
        _image_entry(i, predictions, scores, ranking)
        for i in np.argsort(ranking['rank'])[:NUM_LISTED]]
    summary['most_anomalous'] = [
        _image_entry(i, predictions, scores, ranking)
        for i in np.argsort(scores, kind='stable')[:NUM_LISTED]]
    arrays.update(ranking)
  if name == 'pixels':
    arrays.update(ink=ink, spearman_ink=summary['spearman_ink']['rho'])
  summary['seconds'] = time.perf_counter() - start
  return summary, arrays


# ----------------------------------------------------------------- answers


def verdict(analysis: dict[str, Any]) -> str:
  """The question answered from one detector's stratified statistics."""
  o, s = analysis['overall'], analysis['stratified']
  p, odds = s['p_exact'], s['odds_ratio_mh']
  if p < SIGNIFICANCE and odds > 1:
    lead = 'Yes, more often than chance within their class'
  elif p < SIGNIFICANCE and odds < 1:
    lead = 'No: less often than chance within their class'
  else:
    lead = 'No more often than chance within their class'
  low, high = s['odds_ratio_mh_ci95']
  return (f'{lead} ({analysis["description"]}): '
          f'{o["misclassified_outliers"]:,} of {o["num_misclassified"]:,} '
          f'misclassified test images '
          f'({report.percent(o["outlier_rate_misclassified"])}) are outliers, '
          f'against {report.percent(o["outlier_rate_correct"])} of correctly '
          f'classified ones; stratified by class, Mantel-Haenszel odds ratio '
          f'{report.number(odds)} (95% CI {report.number(low)} to '
          f'{report.number(high)}), exact p = {report.p_value(p)}.')


def ink_confound(pixels: dict[str, Any], labels: np.ndarray,
                 is_outlier: np.ndarray,
                 class_names: Sequence[str]) -> dict[str, Any]:
  """How much the pooled pixel forest's outliers are a matter of class."""
  counts = np.bincount(labels[is_outlier], minlength=data_lib.NUM_CLASSES)
  top = int(counts.argmax())
  share = counts[top] / max(int(is_outlier.sum()), 1)
  share_of_test = float(np.mean(labels == top))
  rho = pixels['spearman_ink']['rho']
  how_much = ('mostly' if abs(rho) >= 0.7 else 'partly' if abs(rho) >= 0.3
              else 'hardly')
  return {
      'spearman_pooled_pixels_vs_ink': rho,
      'most_flagged_class': top,
      'most_flagged_class_share_of_outliers': float(share),
      'most_flagged_class_share_of_test_set': share_of_test,
      'sentence': (
          f'The pooled pixel forest {how_much} measures ink (Spearman of '
          f'its score with total ink {rho:.2f}), and '
          f'{report.percent(share)} of its outliers are labelled '
          f'{class_names[top]} ({report.percent(share_of_test)} of the test '
          'set): its table mixes "misclassified" with "which class", so the '
          'answer follows the class-conditional analysis.'),
  }


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
       f'{arrays["score"][i]:.6f}', int(arrays['is_outlier'][i]),
       f'{arrays["suspicion"][i]:.6f}', int(arrays['rank'][i])]
      for i in range(len(predictions.index))))


def _all_figure_names() -> tuple[str, ...]:
  """Every figure a run may write: checked before, stale ones removed after."""
  names = list(figures.ACCURACY_FIGURES.values())
  for name in DETECTORS:
    names += figures.figure_names(name).values()
  return tuple(names)


# ------------------------------------------------------------------- entry


@workdir_lib.locks_workdir('outliers')
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
    neighbors: int = conditional.DEFAULT_NEIGHBORS,
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
  if neighbors < 1:
    raise ValueError(f'neighbors: must be a positive integer, got {neighbors}')
  primary = primary or spaces[0]
  predictions_path = os.path.join(workdir, 'predictions.csv')
  predictions = predictions_io.read_predictions(predictions_path)
  io_utils.ensure_writable_dir(workdir)
  # Every input and output path is checked before the work, so that a bad
  # one stops the run before any file of the set is written over.
  csv_path, report_path, json_path, *_ = io_utils.check_output_paths(
      workdir, TABLE_AND_REPORT_NAMES + _all_figure_names())
  evaluate.check_data_dir(workdir, data_dir)
  data = outlier_features.load_features(workdir, spaces, fit_on, data_dir)
  predictions_io.check_against_split(predictions_path, predictions, data.test,
                                     data.source)
  if data.model_probabilities is not None:
    predictions_io.check_against_model(predictions_path, predictions,
                                       data.model_probabilities)
  records = metrics_log.read_metrics(workdir)
  class_names = data_lib.CLASS_NAMES.get(data.dataset,
                                         data_lib.CLASS_NAMES['mnist'])
  seconds = {'load_data_and_embeddings': time.perf_counter() - start}
  params = {'feature_spaces': list(spaces), 'fit_on': fit_on,
            'num_fit_images': len(data.test if fit_on == 'test' else data.train),
            'num_train_images': len(data.train),
            'n_estimators': n_estimators, 'max_samples': max_samples,
            'contamination': contamination, 'seed': seed,
            'neighbors': neighbors, 'knn_metric': conditional.KNN_METRIC,
            'knn_contamination': (outliers.DEFAULT_CONTAMINATION
                                  if contamination == 'auto' else contamination),
            'outlier_weight': outliers.DEFAULT_OUTLIER_WEIGHT,
            'data_source': data.source}
  ink = data.test.images.reshape(len(data.test), -1).sum(-1) / 255.0
  forest_start = time.perf_counter()
  forests = None
  if 'pixels' in spaces:
    forests = conditional.class_forests(
        data.train_features['pixels'], data.train.labels,
        n_estimators=n_estimators, max_samples=max_samples,
        contamination=contamination, seed=seed)
  seconds['class_forests'] = time.perf_counter() - forest_start
  analyses, arrays = {}, {}
  for name in detectors(spaces):
    analyses[name], arrays[name] = analyze_detector(name, data, predictions,
                                                    ink, params, forests)
    seconds[f'detector_{name}'] = analyses[name]['seconds']
  accuracy = accuracy_lib.accuracy_summary(predictions)
  answer_detector = next(d for d in ANSWER_DETECTORS if d in analyses)
  summary = {
      'question': QUESTION,
      'dataset': data.dataset,
      'dataset_title': data.dataset_title,
      'class_names': list(class_names),
      'workdir': os.path.abspath(workdir),
      'num_test_images': len(predictions.index),
      'answer': verdict(analyses[answer_detector]),
      'answer_detector': answer_detector,
      'answers': {name: a['answer'] for name, a in analyses.items()},
      'ink_confound': (ink_confound(analyses['pixels'], predictions.labels,
                                    arrays['pixels']['is_outlier'], class_names)
                       if 'pixels' in analyses else None),
      'accuracy': accuracy,
      'num_epochs_logged': len(records),
      'primary_feature_space': primary,
      'outliers_csv': f'outliers.csv holds the pooled {primary} scores; '
                      f'columns {",".join(OUTLIER_COLUMNS)}; correct and '
                      'is_outlier are 1/0; rank 1 = most suspicious',
      'parameters': params,
      'sign_convention': outliers.SIGN_CONVENTION + '; every detector\'s '
                         'score: lower = more anomalous',
      'odds_ratio_method': outliers.ODDS_RATIO_METHOD,
      'p_value_method': outliers.P_VALUE_METHOD,
      'stratified_method': stratified.METHOD,
      'ranking_rule': outliers.RANKING_RULE,
      'table_layout': ('table = [[misclassified outliers, misclassified '
                       'inliers], [correct outliers, correct inliers]]'),
      'non_finite_numbers': 'written as the strings "inf", "-inf", "nan"',
      'analyses': analyses,
  }
  writes = parallel.is_main_process()
  figure_start = time.perf_counter()
  written = {}
  if writes:
    written['accuracy'] = figures.write_accuracy_figures(
        workdir, records, accuracy, data.test.images, predictions, class_names)
    for name in analyses:
      written[name] = figures.write_figures(
          workdir, name, data.test.images, predictions, arrays[name],
          class_names)
  seconds['figures'] = time.perf_counter() - figure_start
  summary['figures'] = written
  summary['seconds'] = seconds
  summary['elapsed_seconds'] = time.perf_counter() - start
  summary = json_safe(summary)
  if writes:
    io_utils.write_text(csv_path, outliers_csv(predictions, arrays[primary]))
    io_utils.write_text(report_path, report.report_markdown(summary))
    io_utils.write_json(json_path, summary)
    figures.remove_stale(workdir, _all_figure_names(),
                         [name for kinds in written.values()
                          for name in kinds.values()])
  return summary
