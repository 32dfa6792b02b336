"""Which misclassified test images are outliers, overall and for their class,
and which look like label errors, for the model in --workdir.

Reads W/predictions.csv (from scripts/evaluate.py: with the nine test-time
views when the model was trained with --config.tta), the test and training
images and W/metrics.jsonl, and writes W/outliers.csv, W/outliers.json,
W/report.md (accuracy, calibration, then the outlier detectors) and its PNG
figures. Pixels need no checkpoint when --data_dir is given; embeddings read
the newest readable checkpoint in W.
"""

from absl import flags

from mnist_jax import cli
from mnist_jax.outliers import analysis as outlier_analysis
from mnist_jax.outliers import conditional
from mnist_jax.outliers import scores as outliers

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder holding '
                               'predictions.csv (and checkpoints/).',
                               required=True)
_FEATURES = flags.DEFINE_enum('features', 'both',
                              ['pixels', 'embeddings', 'both'],
                              'Feature space(s) of the Isolation Forest.')
_FIT_ON = flags.DEFINE_enum('fit_on', 'test',
                            list(outlier_analysis.FIT_SETS),
                            'Images the pooled forests are fitted on (the '
                            'forests per class always on the training '
                            'images); the test images are the ones scored.')
_N_ESTIMATORS = flags.DEFINE_integer('n_estimators',
                                     outliers.DEFAULT_N_ESTIMATORS,
                                     'Number of trees.')
_MAX_SAMPLES = flags.DEFINE_integer('max_samples', outliers.DEFAULT_MAX_SAMPLES,
                                    'Images drawn to build each tree.')
_CONTAMINATION = flags.DEFINE_string('contamination',
                                     str(outliers.DEFAULT_CONTAMINATION),
                                     "'auto' or the expected outlier fraction "
                                     'in (0, 0.5].')
_SEED = flags.DEFINE_integer('seed', 0, 'random_state of the forest.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder of IDX files, if not '
                                'the one the model was trained with.')
_NEIGHBORS = flags.DEFINE_integer('neighbors', conditional.DEFAULT_NEIGHBORS,
                                  'k of the kNN distance in embedding space.')
_PRIMARY = flags.DEFINE_enum('primary', None,
                             list(outlier_analysis.FEATURE_SPACES),
                             'Feature space of outliers.csv (default: pixels '
                             'if analysed, else embeddings).')


def main(argv):
  del argv
  summary = outlier_analysis.run_outlier_analysis(
      _WORKDIR.value, features=_FEATURES.value, fit_on=_FIT_ON.value,
      n_estimators=_N_ESTIMATORS.value, max_samples=_MAX_SAMPLES.value,
      contamination=_CONTAMINATION.value, seed=_SEED.value,
      data_dir=_DATA_DIR.value, primary=_PRIMARY.value,
      neighbors=_NEIGHBORS.value)
  print(f'answer ({summary["answer_detector"]}): {summary["answer"]}')
  for detector, answer in summary['answers'].items():
    print(f'{detector}: {answer}')
  seconds = ', '.join(f'{name} {value:.2f} s'
                      for name, value in summary['seconds'].items())
  print(f'outlier analysis took {summary["elapsed_seconds"]:.2f} s '
        f'({seconds}); wrote outliers.csv '
        f'({summary["primary_feature_space"]}), outliers.json, report.md in '
        f'{summary["workdir"]}')


if __name__ == '__main__':
  cli.run(main)
