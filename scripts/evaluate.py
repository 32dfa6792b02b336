"""Evaluates the newest readable checkpoint in --workdir on every test image.

Writes W/predictions.csv (index, label, prediction, confidence, prob_0..9)
and W/eval.json (accuracy, num_examples, per-class accuracy, confusion matrix,
tta). A model trained with --config.tta=true is evaluated on nine views of
each image (mnist_jax/tta.py).
"""

from absl import flags

from mnist_jax import cli
from mnist_jax import evaluate

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training folder holding '
                               'checkpoints/.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder of IDX files, if not '
                                'the one the model was trained with.')


def main(argv):
  del argv
  summary = evaluate.evaluate_workdir(_WORKDIR.value, _DATA_DIR.value)
  print(f'test accuracy {summary["accuracy"]:.4f} on '
        f'{summary["num_examples"]} test images '
        f'({summary["num_misclassified"]} misclassified), checkpoint step '
        f'{summary["step"]}')


if __name__ == '__main__':
  cli.run(main)
