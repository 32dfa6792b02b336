"""What every script does around its main: quiet TF, distributed start-up,
and bad input reported as one line with a non-zero exit."""

import os
import sys
from typing import Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import logging
import jax

from mnist_jax import flag_parsing
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


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flag_parsing.parse_flags(argv)
  except UserError as e:
    _fail(str(e))


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run, with bad flags and UserError printed as one line,
  'error: ...', and exit code 2."""

  def guarded_main(argv):
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
      parallel.maybe_initialize_distributed()
      main(argv)
    except UserError as e:
      _fail(str(e))

  app.run(guarded_main, flags_parser=_parse_flags)
