"""Ranks the images of a split by how likely their label is wrong:
python scripts/label_errors.py --workdir=W --split=train|test [--folds=K]

Each image's class probabilities come from a model that never trained on
it (K-fold cross-validation; for the test split, each fold's model also
trains on every training image), ranked by confident learning. Writes
W/label_errors_{split}.csv, .json and .png. --flip_labels=N first replaces N
labels (seeded) with another class and reports how many the ranking finds.
"""

from absl import flags

from mnist_jax import cli
from mnist_jax import data
from mnist_jax.label_errors import finder
from mnist_jax.label_errors import ranking

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the outputs; may '
                               'hold a training run on the same dataset.',
                               required=True)
_SPLIT = flags.DEFINE_enum('split', None, list(data.SPLITS),
                           'Split whose labels are checked.', required=True)
_FOLDS = flags.DEFINE_integer('folds', finder.DEFAULT_FOLDS,
                              'Number of cross-validation folds (>= 2).')
_METHOD = flags.DEFINE_enum('method', ranking.DEFAULT_METHOD,
                            list(ranking.METHODS), 'Ranking score.')
_FLIP_LABELS = flags.DEFINE_integer('flip_labels', 0, 'Labels of the split '
                                    'to replace with another class first, as '
                                    'an evaluation (0: none).')
_CONFIG = cli.define_config_flag('label_errors.py')


def main(argv):
  del argv
  cli.log_devices()
  summary = finder.find_label_errors(
      _CONFIG.value, _WORKDIR.value, _SPLIT.value, folds=_FOLDS.value,
      method=_METHOD.value, flip_labels=_FLIP_LABELS.value)
  counts = summary['counts']
  print(f'{summary["split"]}: {counts["num_images"]:,} images, out-of-sample '
        f'accuracy {summary["out_of_sample_accuracy"]:.4f} ({summary["folds"]} '
        f'folds), {counts["num_disagreements"]:,} disagree with their label, '
        f'{counts["num_confident_joint_issues"]:,} flagged by the confident '
        f'joint; took {summary["elapsed_seconds"]:.0f} s')
  noise = summary.get('synthetic_noise')
  if noise:
    for method, result in noise['retrieval'].items():
      at = next(a for a in result['at'] if a['n'] == noise['num_flipped'])
      print(f'{method}: {at["found"]} of {noise["num_flipped"]} flipped labels '
            f'in the top {at["n"]} (recall {at["recall"]:.3f}), average '
            f'precision {result["average_precision"]:.3f}')
  print(f'wrote {", ".join(finder.output_names(summary["split"]))} in '
        f'{summary["workdir"]}')


if __name__ == '__main__':
  cli.run(main)
