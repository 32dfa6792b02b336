"""What every script does around its main: quiet TF, distributed start-up,
and bad input reported as one line with a non-zero exit."""

import os
import sys
from typing import Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import logging
import jax

from mnist_jax import parallel
from mnist_jax.errors import UserError


def log_devices() -> None:
  logging.info('JAX %s, process %d of %d, devices: %s', jax.__version__,
               jax.process_index(), jax.process_count(), jax.devices())


class _QuietLibraries(logging.logging.Filter):
  """Keeps orbax's per-save INFO chatter out of the training log."""

  def filter(self, record):
    return record.levelno >= logging.logging.ERROR or (
        '/orbax/' not in record.pathname)


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run, with UserError printed as 'error: ...' and exit code 2."""

  def guarded_main(argv):
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
      parallel.maybe_initialize_distributed()
      main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(guarded_main)
