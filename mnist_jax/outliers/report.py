"""report.md of the outlier analysis, rendered from the outliers.json dict.

The dict has been through `outlier_analysis.json_safe`, so non-finite numbers
arrive as the strings "inf", "-inf" and "nan"; the formatters below accept
them.
"""

from typing import Any

from mnist_jax.outliers import scores as outliers


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
  expected = o['expected_misclassified_outliers_if_independent']
  low, high = o['odds_ratio_ci95']
  separation = analysis['score_separation']
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
      'outliers).',
      f'- Without a threshold: a misclassified image scores as more anomalous '
      f'than a correctly classified one with probability '
      f'{_number(separation["auc"])} (0.5 = no relation; Mann-Whitney '
      f'p = {_p(separation["p_two_sided"])}, two-sided).', '',
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
  overall = next(iter(summary['analyses'].values()))['overall']
  accuracy = 1 - overall['num_misclassified'] / overall['num_images']
  lines = [
      '# Outliers among misclassified test images', '',
      summary['question'], '',
      '## Answer', '',
  ]
  lines += [f'- **{space}**: {answer}'
            for space, answer in summary['answers'].items()]
  lines += [
      '', '## Method', '',
      f'- Model predictions: predictions.csv of the evaluated checkpoint, '
      f'test accuracy {accuracy:.2%} ({overall["num_misclassified"]:,} of '
      f'{overall["num_images"]:,} misclassified).',
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
