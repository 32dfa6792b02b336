"""report.md: accuracy and calibration first, then the outlier analysis,
rendered from the outliers.json dict.

The dict has been through `analysis.json_safe`, so non-finite numbers
arrive as the strings "inf", "-inf" and "nan"; the formatters below accept
them. A figure that was not drawn (nothing to show) is a sentence instead.
"""

from typing import Any

from mnist_jax.outliers import scores as outliers

DETECTOR_TITLES = {
    'pixels': 'Pooled pixel forest',
    'pixels_by_label': 'Pixel forest per class, against the labelled class',
    'pixels_by_prediction': 'Pixel forest per class, against the predicted class',
    'embeddings': 'Pooled embedding forest',
    'embeddings_knn': 'kNN distance in embedding space',
}


def number(value: Any, digits: int = 3) -> str:
  if isinstance(value, str):
    return 'n/a' if value == 'nan' else value
  if isinstance(value, int):
    return f'{value:,}'
  return f'{value:.{digits}g}'


def percent(value: Any) -> str:
  if isinstance(value, str) or value != value:
    return 'n/a'
  return f'{100 * value:.1f}%'


def p_value(value: Any) -> str:
  return number(value) if isinstance(value, str) else (
      outliers.format_p_value(value))


def _figure(figures: dict[str, str], kind: str, caption: str,
            absent: str) -> list[str]:
  if kind in figures:
    return [f'![{caption}]({figures[kind]})', '']
  return [absent, '']


# ------------------------------------------------------------------ accuracy


def _accuracy_markdown(summary: dict[str, Any]) -> list[str]:
  accuracy = summary['accuracy']
  names = summary['class_names']
  figures = summary['figures'].get('accuracy', {})
  matrix = accuracy['confusion_matrix']
  reliability = accuracy['reliability']
  confident = accuracy['misclassified_above_confidence']
  lines = [
      '## Accuracy', '',
      f'Test accuracy {percent(accuracy["accuracy"])}: '
      f'{accuracy["num_misclassified"]:,} of {accuracy["num_examples"]:,} test '
      'images misclassified (predictions.csv of the evaluated checkpoint).', '',
      '### Training curves', '']
  lines += _figure(figures, 'training_curves', 'training curves',
                   'No metrics.jsonl in the workdir: no training curves.')
  lines += ['### Confusion matrix', '']
  lines += _figure(figures, 'confusion_matrix', 'confusion matrix', '')
  lines += ['### Per-class accuracy', '',
            '| class | images | correct | accuracy | most frequent wrong '
            'prediction |', '|---|---:|---:|---:|---|']
  for k, row in enumerate(matrix):
    wrong = [(count, j) for j, count in enumerate(row) if j != k and count]
    worst = (f'{names[max(wrong)[1]]} ({max(wrong)[0]:,})' if wrong else '-')
    lines.append(f'| {names[k]} | {sum(row):,} | {row[k]:,} | '
                 f'{percent(accuracy["per_class_accuracy"][str(k)])} | {worst} |')
  lines += ['', '### Misclassified test images', '']
  lines += _figure(
      figures, 'misclassified', 'misclassified test images',
      'No test image is misclassified.')
  lines += [
      '### Calibration', '',
      f'Expected calibration error {reliability["ece"]:.4f} '
      f'({reliability["num_bins"]} equal-width bins of confidence, the top '
      f'probability); {confident["count"]:,} of the '
      f'{accuracy["num_misclassified"]:,} misclassified images had confidence '
      f'above {confident["confidence"]}.', '']
  lines += _figure(figures, 'reliability', 'reliability diagram', '')
  return lines


# ------------------------------------------------------------------ outliers


def _summary_table(analyses: dict[str, Any]) -> list[str]:
  lines = [
      '| detector | outlier rate misclassified | outlier rate correct | '
      'odds ratio (pooled) | Fisher p | odds ratio within classes (MH) | '
      'exact stratified p | odds ratio within class and ink quintile | '
      'P(misclassified more anomalous) | Spearman with ink |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for name, a in analyses.items():
    o, s = a['overall'], a['stratified']
    lines.append(
        f'| {DETECTOR_TITLES[name]} | {percent(o["outlier_rate_misclassified"])}'
        f' | {percent(o["outlier_rate_correct"])} | {number(o["odds_ratio"])} | '
        f'{p_value(o["p_two_sided"])} | {number(s["odds_ratio_mh"])} | '
        f'{p_value(s["p_exact"])} | '
        f'{number(a["stratified_class_and_ink"]["odds_ratio_mh"])} | '
        f'{number(a["score_separation"]["auc"])} | '
        f'{number(a["spearman_ink"]["rho"], 2)} |')
  return lines


def _detector_markdown(analysis: dict[str, Any], figures: dict[str, str],
                       class_names: list[str]) -> str:
  o, s = analysis['overall'], analysis['stratified']
  ink = analysis['stratified_class_and_ink']
  low, high = o['odds_ratio_ci95']
  mh_low, mh_high = s['odds_ratio_mh_ci95']
  separation = analysis['score_separation']
  lines = [
      f'## {DETECTOR_TITLES[analysis["detector"]]}', '',
      f'{analysis["description"][0].upper()}{analysis["description"][1:]} '
      f'({analysis["feature_dim"]} features).', '',
      f'**{analysis["answer"]}**', '',
      '| | outlier | inlier | total | outlier rate |',
      '|---|---:|---:|---:|---:|',
      f'| misclassified | {o["misclassified_outliers"]:,} | '
      f'{o["misclassified_inliers"]:,} | {o["num_misclassified"]:,} | '
      f'{percent(o["outlier_rate_misclassified"])} |',
      f'| correct | {o["correct_outliers"]:,} | {o["correct_inliers"]:,} | '
      f'{o["num_correct"]:,} | {percent(o["outlier_rate_correct"])} |',
      f'| all | {o["num_outliers"]:,} | {o["num_images"] - o["num_outliers"]:,}'
      f' | {o["num_images"]:,} | {percent(o["outlier_rate"])} |', '',
      f'- Misclassified outliers expected if outlierness and errors were '
      'independent: '
      f'{number(o["expected_misclassified_outliers_if_independent"])}'
      f'; within classes: {number(s["expected_misclassified_outliers"])}; '
      f'observed: {o["misclassified_outliers"]:,}.',
      f'- Odds ratio {number(o["odds_ratio"])} (conditional MLE), 95% CI '
      f'{number(low)} to {number(high)}; Fisher p = {p_value(o["p_two_sided"])} '
      f'(two-sided), {p_value(o["p_greater"])} (one-sided, more outliers).',
      f'- Stratified by true class: Mantel-Haenszel odds ratio '
      f'{number(s["odds_ratio_mh"])} (95% CI {number(mh_low)} to '
      f'{number(mh_high)}), Cochran-Mantel-Haenszel p = {p_value(s["p_cmh"])}, '
      f'exact p = {p_value(s["p_exact"])} (two-sided), '
      f'{p_value(s["p_exact_greater"])} (one-sided).',
      f'- Stratified by true class and ink quintile within the class: '
      f'Mantel-Haenszel odds ratio {number(ink["odds_ratio_mh"])}, exact '
      f'p = {p_value(ink["p_exact"])}.',
      f'- Without a threshold: a misclassified image scores as more anomalous '
      f'than a correctly classified one with probability '
      f'{number(separation["auc"])} (0.5 = no relation; Mann-Whitney '
      f'p = {p_value(separation["p_two_sided"])}, two-sided).',
      f'- Spearman correlation of the score with total ink: '
      f'{number(analysis["spearman_ink"]["rho"], 2)}.', '',
      '| class | images | misclassified | misclassified outliers | '
      'outlier rate misclassified | outlier rate correct | odds ratio | '
      'p (Fisher) | p (BH) |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for c in analysis['per_class']:
    lines.append(
        f'| {class_names[c["label"]]} | {c["num_images"]:,} | '
        f'{c["num_misclassified"]:,} | {c["misclassified_outliers"]:,} | '
        f'{percent(c["outlier_rate_misclassified"])} | '
        f'{percent(c["outlier_rate_correct"])} | {number(c["odds_ratio"])} | '
        f'{p_value(c["p_two_sided"])} | {p_value(c["p_two_sided_bh"])} |')
  lines.append('')
  if 'top_label_error_candidates' in analysis:
    lines += [
        'Top label-error / ambiguous candidates from this model\'s own '
        'probabilities (scripts/label_errors.py ranks with out-of-sample ones):',
        '', '| rank | index | label | prediction | p(label) | p(prediction) | '
        'score | suspicion |', '|---:|---:|---|---|---:|---:|---:|---:|']
    for e in analysis['top_label_error_candidates'][:10]:
      lines.append(
          f'| {e["rank"]} | {e["index"]} | {class_names[e["label"]]} | '
          f'{class_names[e["prediction"]]} | {e["p_label"]:.4f} | '
          f'{e["p_prediction"]:.4f} | {e["if_score"]:.4f} | '
          f'{e["suspicion"]:.4f} |')
    lines.append('')
  lines += _figure(figures, 'scores', 'scores', '')
  lines += _figure(figures, 'misclassified_outliers', 'misclassified outliers',
                   'No misclassified image is an outlier for this detector.')
  for kind in ('ink', 'most_anomalous', 'label_errors'):
    if kind in figures:
      lines += _figure(figures, kind, kind.replace('_', ' '), '')
  return '\n'.join(lines)


def _method_markdown(summary: dict[str, Any]) -> list[str]:
  params = summary['parameters']
  return [
      '## Method', '',
      f'- Isolation Forests (scikit-learn): n_estimators='
      f'{params["n_estimators"]}, max_samples={params["max_samples"]}, '
      f'contamination={params["contamination"]}, random_state='
      f'{params["seed"]}. The pooled forests are fitted on the '
      f'{params["fit_on"]} images ({params["num_fit_images"]:,}); the forests '
      f'per class on the {params["num_train_images"]:,} training images of '
      'their class. Each flags as outliers the images scoring below the '
      + ('contamination quantile of the images it was fitted on.'
         if params['contamination'] != 'auto' else
         "threshold of scikit-learn's contamination='auto' (a fixed offset)."),
      f'- kNN: mean {params["knn_metric"]} distance to the '
      f'{params["neighbors"]} nearest other {params["fit_on"]} embeddings, as '
      'the score exp(-distance / median distance); outliers: distance above '
      f'the {1 - params["knn_contamination"]:.2f} quantile of the '
      f'{params["fit_on"]} images\' own distances.',
      '- Pixels: raw pixels scaled to [0, 1]. Embeddings: the penultimate '
      'activations of the latest checkpoint.',
      f'- Sign convention: {summary["sign_convention"]}.',
      f'- Odds ratio: {summary["odds_ratio_method"]}.',
      f'- p-values: {summary["p_value_method"]}; {summary["stratified_method"]}.',
      f'- Label-error ranking of the pooled spaces: {summary["ranking_rule"]}',
      f'- outliers.csv holds the pooled {summary["primary_feature_space"]} '
      f'scores. The analysis took {summary["elapsed_seconds"]:.1f} s.', '']


def report_markdown(summary: dict[str, Any]) -> str:
  """report.md, every number taken from `summary` (as in outliers.json)."""
  lines = [
      f'# {summary["dataset_title"]}: accuracy, and outliers among the '
      'misclassified test images', '',
      summary['question'], '',
      '## Answer', '',
      f'**{summary["answer"]}**', '']
  if summary['ink_confound']:
    lines += [summary['ink_confound']['sentence'], '']
  lines += _accuracy_markdown(summary)
  lines += ['## Outliers: every detector', '']
  lines += _summary_table(summary['analyses'])
  lines += ['', 'Odds ratios above 1: misclassified images are outliers more '
            'often than correct ones. "Within classes" compares images of the '
            'same true class only, which removes the differences between '
            'classes in both the error rate and the outlier rate.', '']
  lines += _method_markdown(summary)
  body = '\n'.join(lines) + '\n'
  return body + '\n'.join(
      _detector_markdown(analysis, summary['figures'].get(name, {}),
                         summary['class_names'])
      for name, analysis in summary['analyses'].items())
