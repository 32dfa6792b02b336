"""Trains a model: python scripts/train.py --config=configs/default.py --workdir=W

Writes W/metrics.jsonl, TensorBoard events (hparams, per-epoch metrics,
per-step loss and learning rate) and orbax checkpoints with the config in
W/checkpoints; an existing run in W is resumed.
"""

from absl import flags

from mnist_jax import cli
from mnist_jax import train

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints and '
                               'metrics; an existing run there is resumed.',
                               required=True)
_CONFIG = cli.define_config_flag('default.py')


def main(argv):
  del argv
  cli.log_devices()
  summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
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
