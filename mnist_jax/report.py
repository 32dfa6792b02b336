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
  dict as outliers.json.

Every input is checked before anything is written.
"""

import csv
import dataclasses
import io
import math
import os
import time
from typing import Any, Sequence

from matplotlib.figure import Figure
import numpy as np

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax import io_utils
from mnist_jax import outliers
from mnist_jax.errors import UserError

FEATURE_SPACES = ('pixels', 'embeddings')
FIT_SETS = ('test', 'train')
OUTLIER_COLUMNS = ('index', 'label', 'prediction', 'correct', 'if_score',
                   'is_outlier', 'suspicion', 'rank')
NUM_TILES = 30
NUM_LISTED = 20
# Predictions.csv holds 6 decimals; a larger gap means another checkpoint.
PROBABILITY_TOLERANCE = 0.01
QUESTION = ('Of the misclassified test images, how many are Isolation Forest '
            'outliers, is that more than chance, and which images look like '
            'label errors or are ambiguous?')


@dataclasses.dataclass(frozen=True)
class Predictions:
  """The columns of predictions.csv that the analysis uses."""
  index: np.ndarray  # int64 [N]
  labels: np.ndarray  # int64 [N]
  predictions: np.ndarray  # int64 [N]
  probabilities: np.ndarray  # float64 [N, 10]


# ------------------------------------------------------------------ inputs


def _column(path: str, rows: list[list[str]], header: list[str], name: str,
            integer: bool) -> np.ndarray:
  position = header.index(name)
  try:
    values = np.array([row[position] for row in rows], np.float64)
  except ValueError:
    for line, row in enumerate(rows, start=2):
      try:
        float(row[position])
      except ValueError:
        raise UserError(f'{path}: line {line}: column {name} is '
                        f'{row[position]!r}, not a number') from None
  if not np.all(np.isfinite(values)):
    line = int(np.flatnonzero(~np.isfinite(values))[0]) + 2
    raise UserError(f'{path}: line {line}: column {name} is not finite')
  if integer:
    if not np.all(values == np.round(values)):
      line = int(np.flatnonzero(values != np.round(values))[0]) + 2
      raise UserError(f'{path}: line {line}: column {name} is not an integer')
    return values.astype(np.int64)
  return values


def _check_range(path: str, name: str, values: np.ndarray, low: float,
                 high: float) -> None:
  bad = np.flatnonzero((values < low) | (values > high))
  if bad.size:
    raise UserError(f'{path}: line {bad[0] + 2}: {name} {values[bad[0]]} is '
                    f'outside {low}-{high} ({bad.size} such rows)')


def read_predictions(path: str) -> Predictions:
  """Reads and checks predictions.csv as written by scripts/evaluate.py."""
  io_utils.require_file(path, 'predictions file (write it with '
                        'scripts/evaluate.py)')
  try:
    with open(path, newline='') as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise UserError(f'{path}: cannot read as CSV: {e}') from None
  if not rows:
    raise UserError(f'{path}: empty file, expected the header '
                    f'{",".join(evaluate.PREDICTION_COLUMNS)}')
  header, rows = [name.strip() for name in rows[0]], rows[1:]
  missing = [c for c in evaluate.PREDICTION_COLUMNS if c not in header]
  if missing:
    raise UserError(f'{path}: missing columns {", ".join(missing)} (expected '
                    f'{",".join(evaluate.PREDICTION_COLUMNS)})')
  if not rows:
    raise UserError(f'{path}: no rows after the header')
  for line, row in enumerate(rows, start=2):
    if len(row) != len(header):
      raise UserError(f'{path}: line {line} has {len(row)} fields, the header '
                      f'has {len(header)}')
  labels = _column(path, rows, header, 'label', integer=True)
  predictions = _column(path, rows, header, 'prediction', integer=True)
  probabilities = np.stack([
      _column(path, rows, header, f'prob_{k}', integer=False)
      for k in range(outliers.NUM_CLASSES)], axis=-1)
  last_class = outliers.NUM_CLASSES - 1
  _check_range(path, 'label', labels, 0, last_class)
  _check_range(path, 'prediction', predictions, 0, last_class)
  _check_range(path, 'probability sum', probabilities.sum(-1), 0.99, 1.01)
  return Predictions(index=_column(path, rows, header, 'index', integer=True),
                     labels=labels, predictions=predictions,
                     probabilities=probabilities)


def check_against_split(path: str, predictions: Predictions,
                        split: data_lib.Split, source: str) -> None:
  """Checks that predictions.csv describes `split`, row by row."""
  if len(predictions.index) != len(split):
    raise UserError(f'{path} has {len(predictions.index):,} rows but the test '
                    f'split from {source} has {len(split):,} images')
  for name, ours, theirs in (('index', predictions.index, split.index),
                             ('label', predictions.labels, split.labels)):
    bad = np.flatnonzero(ours != theirs)
    if bad.size:
      raise UserError(
          f'{path}: column {name} differs from the test split from {source} '
          f'at {bad.size:,} rows (first at line {bad[0] + 2}: '
          f'{ours[bad[0]]} vs {theirs[bad[0]]}); were the predictions made '
          'on other data?')


def parse_contamination(text: str | float) -> str | float:
  """'auto' or a float in (0, 0.5], as IsolationForest accepts."""
  if text == 'auto':
    return 'auto'
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not 0 < value <= 0.5:
    raise UserError(f"--contamination: expected 'auto' or a number in "
                    f'(0, 0.5], got {text!r}')
  return value


def feature_spaces(features: str) -> tuple[str, ...]:
  if features == 'both':
    return FEATURE_SPACES
  if features not in FEATURE_SPACES:
    raise UserError(f'--features: expected pixels, embeddings or both, got '
                    f'{features!r}')
  return (features,)


def _check_parameters(fit_on: str, n_estimators: int, max_samples: int,
                      spaces: Sequence[str], primary: str | None) -> None:
  if fit_on not in FIT_SETS:
    raise UserError(f'--fit_on: expected test or train, got {fit_on!r}')
  for flag, value in (('--n_estimators', n_estimators),
                      ('--max_samples', max_samples)):
    if value < 1:
      raise UserError(f'{flag}: must be a positive integer, got {value}')
  if primary is not None and primary not in spaces:
    raise UserError(f'--primary: {primary!r} is not among the analysed '
                    f'feature spaces ({", ".join(spaces)})')


@dataclasses.dataclass
class _Data:
  test: data_lib.Split
  source: str
  features: dict[str, np.ndarray]  # feature space -> test features
  fit_features: dict[str, np.ndarray | None]  # None: fit on the test features
  num_fit_images: int
  model_probabilities: np.ndarray | None


def _load_data(workdir: str, spaces: Sequence[str], fit_on: str,
               data_dir: str | None) -> _Data:
  """Test (and fit) splits and their features; the checkpoint only if needed."""
  overrides = {} if data_dir is None else {'data_dir': data_dir}
  state = None
  if 'embeddings' in spaces:
    config, state = evaluate.restore_trained_state(workdir, overrides)
  elif data_dir is None:
    config = checkpoint_lib.read_config(workdir)
  if data_dir is None:
    source = f'the checkpoint config (data_dir={config.data_dir!r})'
    load = lambda split: data_lib.load_split(config, split)
  else:
    source = f'--data_dir {data_dir!r}'
    load = lambda split: data_lib.load_idx_split(
        os.path.expanduser(data_dir), split)
  splits = {'test': load('test')}
  if fit_on == 'train':
    splits['train'] = load('train')
  features = {}
  fit_features = {}
  model_probabilities = None
  if 'pixels' in spaces:
    features['pixels'] = outliers.pixel_features(splits['test'].images)
    fit_features['pixels'] = (None if fit_on == 'test' else
                              outliers.pixel_features(splits['train'].images))
  if 'embeddings' in spaces:
    outputs = {name: evaluate.predict(state, split, config.eval_batch_size)
               for name, split in splits.items()}
    features['embeddings'] = outputs['test']['features']
    fit_features['embeddings'] = (None if fit_on == 'test' else
                                  outputs['train']['features'])
    model_probabilities = outputs['test']['probabilities']
  return _Data(test=splits['test'], source=source, features=features,
               fit_features=fit_features,
               num_fit_images=len(splits[fit_on]),
               model_probabilities=model_probabilities)


def _check_model_agrees(path: str, predictions: Predictions,
                        model_probabilities: np.ndarray) -> None:
  gap = np.abs(model_probabilities - predictions.probabilities).max(-1)
  bad = np.flatnonzero(gap > PROBABILITY_TOLERANCE)
  if bad.size:
    raise UserError(
        f'{path}: probabilities differ from the latest checkpoint\'s at '
        f'{bad.size:,} rows (first at line {bad[0] + 2}); rerun '
        'scripts/evaluate.py so predictions and embeddings come from the same '
        'checkpoint')


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


# ----------------------------------------------------------------- outputs


def outliers_csv(predictions: Predictions,
                 arrays: dict[str, np.ndarray]) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(OUTLIER_COLUMNS)
  for i in range(len(predictions.index)):
    writer.writerow([
        int(predictions.index[i]), int(predictions.labels[i]),
        int(predictions.predictions[i]), int(not arrays['misclassified'][i]),
        f'{arrays["if_score"][i]:.6f}', int(arrays['is_outlier'][i]),
        f'{arrays["suspicion"][i]:.6f}', int(arrays['rank'][i])])
  return out.getvalue()


def _save(fig: Figure, path: str) -> None:
  with io_utils.atomic_path(path) as tmp_path:
    fig.savefig(tmp_path, format='png', dpi=100)


def score_histogram(path: str, scores: np.ndarray, misclassified: np.ndarray,
                    title: str) -> None:
  """Densities of the IF score of correct and misclassified images."""
  fig = Figure(figsize=(7, 4))
  ax = fig.subplots()
  bins = np.linspace(scores.min(), scores.max(), 50)
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
  return {kind: f'outliers_{space}_{kind}.png' for kind in (
      'scores', 'most_anomalous', 'misclassified_outliers', 'label_errors')}


def write_figures(workdir: str, space: str, images: np.ndarray,
                  predictions: Predictions,
                  arrays: dict[str, np.ndarray]) -> None:
  names = figure_names(space)
  scores = arrays['if_score']
  by_score = np.argsort(scores, kind='stable')
  misclassified_outliers = [i for i in by_score if arrays['misclassified'][i]
                            and arrays['is_outlier'][i]]
  by_rank = np.argsort(arrays['rank'])[:NUM_TILES]
  path = lambda kind: os.path.join(workdir, names[kind])
  score_histogram(path('scores'), scores, arrays['misclassified'],
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
    image_grid(path(kind), images[positions],
               _tile_titles(positions, predictions, values, value_name), title)


def _number(value: Any, digits: int = 3) -> str:
  if isinstance(value, str):
    return 'n/a' if value == 'nan' else value
  if isinstance(value, int):
    return f'{value:,}'
  return f'{value:.{digits}g}'


def _percent(value: Any) -> str:
  return _number(value) if isinstance(value, str) else f'{100 * value:.1f}%'


def _p(value: Any) -> str:
  return _number(value) if isinstance(value, str) else (
      outliers.format_p_value(value))


def _space_markdown(analysis: dict[str, Any], figures: dict[str, str]) -> str:
  o = analysis['overall']
  sep = analysis['score_separation']
  expected = o['expected_misclassified_outliers_if_independent']
  low, high = o['odds_ratio_ci95']
  lines = [
      f'## {analysis["feature_space"].capitalize()} '
      f'({analysis["feature_dim"]} features, forest fitted on the '
      f'{analysis["fit_on"]} images)', '',
      f'**{analysis["answer"]}**', '',
      '| | outlier | inlier | total | outlier rate |',
      '|---|---:|---:|---:|---:|',
      f'| misclassified | {o["misclassified_outliers"]:,} | '
      f'{o["misclassified_inliers"]:,} | {o["num_misclassified"]:,} | '
      f'{_percent(o["outlier_rate_misclassified"])} |',
      f'| correct | {o["correct_outliers"]:,} | {o["correct_inliers"]:,} | '
      f'{o["num_correct"]:,} | {_percent(o["outlier_rate_correct"])} |',
      f'| all | {o["num_outliers"]:,} | {o["num_images"] - o["num_outliers"]:,}'
      f' | {o["num_images"]:,} | {_percent(o["outlier_rate"])} |', '',
      f'- Misclassified outliers expected if outlierness and errors were '
      f'independent: {_number(expected)}; observed: '
      f'{o["misclassified_outliers"]:,}.',
      f'- Error rate among outliers '
      f'{_percent(o["misclassification_rate_outliers"])}, among inliers '
      f'{_percent(o["misclassification_rate_inliers"])}.',
      f'- Odds ratio {_number(o["odds_ratio"])} (conditional MLE), 95% CI '
      f'{_number(low)} to {_number(high)}; sample odds ratio '
      f'{_number(o["odds_ratio_sample"])}.',
      f"- Fisher's exact test: p = {_p(o['p_two_sided'])} (two-sided), "
      f'p = {_p(o["p_greater"])} (one-sided, misclassified more often '
      'outliers).', '',
      '### Per true class', '',
      '| class | images | misclassified | misclassified outliers | '
      'outlier rate misclassified | outlier rate correct | odds ratio | '
      '95% CI | p (two-sided) |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for c in analysis['per_class']:
    low, high = c['odds_ratio_ci95']
    lines.append(
        f'| {c["label"]} | {c["num_images"]:,} | {c["num_misclassified"]:,} | '
        f'{c["misclassified_outliers"]:,} | '
        f'{_percent(c["outlier_rate_misclassified"])} | '
        f'{_percent(c["outlier_rate_correct"])} | {_number(c["odds_ratio"])} | '
        f'{_number(low)}-{_number(high)} | {_p(c["p_two_sided"])} |')
  lines += [
      '', '### Top label-error / ambiguous candidates', '',
      '| rank | index | label | prediction | p(label) | p(prediction) | '
      'IF score | suspicion |', '|---:|---:|---:|---:|---:|---:|---:|---:|']
  for e in analysis['top_label_error_candidates']:
    lines.append(
        f'| {e["rank"]} | {e["index"]} | {e["label"]} | {e["prediction"]} | '
        f'{e["p_label"]:.4f} | {e["p_prediction"]:.4f} | {e["if_score"]:.4f} | '
        f'{e["suspicion"]:.4f} |')
  lines += ['', '### Figures', '']
  lines += [f'![{kind}]({name})\n' for kind, name in figures.items()]
  return '\n'.join(lines) + '\n'


def report_markdown(summary: dict[str, Any]) -> str:
  """report.md, every number taken from `summary` (as in outliers.json)."""
  params = summary['parameters']
  lines = [
      '# Outliers among misclassified test images', '',
      summary['question'], '',
      '## Answer', '',
  ]
  lines += [f'- **{space}**: {answer}'
            for space, answer in summary['answers'].items()]
  lines += [
      '', '## Method', '',
      f'- Isolation Forest (scikit-learn), '
      f'n_estimators={params["n_estimators"]}, '
      f'max_samples={params["max_samples"]}, '
      f'contamination={params["contamination"]}, '
      f'random_state={params["seed"]}, fitted on the {params["fit_on"]} '
      f'images ({params["num_fit_images"]:,}) and scored on the '
      f'{summary["num_test_images"]:,} test images.',
      '- Pixels: raw pixels scaled to [0, 1], flattened. Embeddings: the '
      'penultimate activations of the latest checkpoint.',
      f'- Sign convention: {summary["sign_convention"]}.',
      f'- Odds ratio: {summary["odds_ratio_method"]}.',
      f'- p-values: {summary["p_value_method"]}.',
      f'- Ranking: {summary["ranking_rule"]}',
      f'- outliers.csv uses the {summary["primary_feature_space"]} scores. '
      f'The analysis took {summary["elapsed_seconds"]:.1f} s.', '',
  ]
  body = '\n'.join(lines) + '\n'
  return body + '\n'.join(
      _space_markdown(summary['analyses'][space], summary['figures'][space])
      for space in summary['analyses'])


# ------------------------------------------------------------------- entry


def run_outlier_analysis(
    workdir: str,
    features: str = 'both',
    fit_on: str = 'test',
    n_estimators: int = outliers.DEFAULT_N_ESTIMATORS,
    max_samples: int = outliers.DEFAULT_MAX_SAMPLES,
    contamination: str | float = 'auto',
    seed: int = 0,
    data_dir: str | None = None,
    primary: str | None = None,
) -> dict[str, Any]:
  """Writes outliers.csv, outliers.json, report.md and figures into `workdir`.

  Returns the dict written to outliers.json. Pixels need no checkpoint when
  `data_dir` is given; embeddings always read the latest checkpoint.
  """
  start = time.perf_counter()
  spaces = feature_spaces(features)
  contamination = parse_contamination(contamination)
  _check_parameters(fit_on, n_estimators, max_samples, spaces, primary)
  primary = primary or spaces[0]
  predictions_path = os.path.join(workdir, 'predictions.csv')
  predictions = read_predictions(predictions_path)
  io_utils.ensure_writable_dir(workdir)
  data = _load_data(workdir, spaces, fit_on, data_dir)
  check_against_split(predictions_path, predictions, data.test, data.source)
  if data.model_probabilities is not None:
    _check_model_agrees(predictions_path, predictions, data.model_probabilities)
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
  figure_start = time.perf_counter()
  for space in spaces:
    write_figures(workdir, space, data.test.images, predictions, arrays[space])
  seconds['figures'] = time.perf_counter() - figure_start
  io_utils.write_text(os.path.join(workdir, 'outliers.csv'),
                      outliers_csv(predictions, arrays[primary]))
  elapsed = time.perf_counter() - start
  summary = json_safe({
      'question': QUESTION,
      'workdir': os.path.abspath(workdir),
      'num_test_images': len(predictions.index),
      'answers': {space: analyses[space]['answer'] for space in spaces},
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
      'figures': {space: figure_names(space) for space in spaces},
      'seconds': seconds,
      'elapsed_seconds': elapsed,
  })
  io_utils.write_text(os.path.join(workdir, 'report.md'),
                      report_markdown(summary))
  io_utils.write_json(os.path.join(workdir, 'outliers.json'), summary)
  return summary

