"""Trains a model: python scripts/train.py --config=configs/default.py --workdir=W

Writes W/metrics.jsonl, TensorBoard scalars and orbax checkpoints (with the
config) in W/checkpoints, and resumes from the latest checkpoint in W.
"""

from absl import flags

from mnist_jax import cli
from mnist_jax import flag_parsing
from mnist_jax import train

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints and '
                               'metrics; an existing run there is resumed.',
                               required=True)
flag_parsing.define_config_file('config', 'configs/default.py',
                                'Config file (a get_config() module).')


def main(argv):
  del argv
  cli.log_devices()
  summary = train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)
  if not summary:
    print(f'{_WORKDIR.value} holds a finished run and no metrics.jsonl; '
          'nothing to train')
    return
  print(f'test accuracy {summary["test_accuracy"]:.4f} on '
        f'{summary["test_examples"]} test images after epoch {summary["epoch"]} '
        f'({summary["elapsed"]:.1f} s)')
  if 'test_accuracy_tta' in summary:
    print(f'test accuracy {summary["test_accuracy_tta"]:.4f} with test-time '
          'augmentation (nine views of each image)')


if __name__ == '__main__':
  cli.run(main)
