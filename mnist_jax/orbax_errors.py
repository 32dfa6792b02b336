"""What orbax leaves when it fails to read a checkpoint: the useful line of
its error, and the reports its background reads make after it returns."""

import contextlib
import logging
import os
import sys
from typing import Any, Callable, Iterator

from mnist_jax.errors import UserError


def first_line(error: BaseException) -> str:
  """The first line of the error at the bottom of an explicit `raise ... from`
  chain: orbax wraps tensorstore's precise error (file, byte range) in a vague
  one. Implicit context is not followed (json's own StopIteration)."""
  while error.__cause__ is not None:
    error = error.__cause__
  # args[0], not str(): str() of a KeyError is the repr of its message.
  text = error.args[0] if len(error.args) == 1 else str(error)
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


class _FailedReadDebris:
  """Recognizes, and drops, the reports that trail a failed orbax read.

  When one array fails to open or load, orbax closes its event loop with the
  other tensorstore operations still in flight, and each reports on its own
  later: tensorstore's threads a RuntimeError('Event loop is closed'), orbax's
  unfinished coroutines their read error (both through sys.unraisablehook),
  its finished tasks 'Task exception was never retrieved' (through the asyncio
  logger). Dozens of tracebacks around the one error we report. Some may come
  while the interpreter shuts down and clears module globals, so the methods
  use only attributes and builtins.
  """

  def __init__(self, unraisablehook: Callable[[Any], None]):
    self.previous_hook = unraisablehook
    self._orbax_dir = f'{os.sep}orbax{os.sep}'

  def is_debris(self, error: BaseException | None) -> bool:
    if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
      return True
    frame = getattr(error, '__traceback__', None)
    while frame is not None:
      if self._orbax_dir in frame.tb_frame.f_code.co_filename:
        return True
      frame = frame.tb_next
    return False

  def unraisablehook(self, unraisable: Any) -> None:
    if not self.is_debris(unraisable.exc_value):
      self.previous_hook(unraisable)

  def filter(self, record: logging.LogRecord) -> bool:
    """As a filter of the asyncio logger."""
    return not (record.exc_info and self.is_debris(record.exc_info[1]))


class UnreadableCheckpoint(UserError):
  """A checkpoint whose files orbax failed to read."""


@contextlib.contextmanager
def failed_read_debris_dropped() -> Iterator[None]:
  """Drops _FailedReadDebris while orbax reads arrays. If the block raises
  UnreadableCheckpoint, the filters stay: the debris comes after we return
  (and the scripts exit on that error). Any other way out puts them back."""
  debris = _FailedReadDebris(sys.unraisablehook)
  sys.unraisablehook = debris.unraisablehook
  logging.getLogger('asyncio').addFilter(debris)
  try:
    yield
  except UnreadableCheckpoint:
    raise
  except BaseException:
    _remove(debris)
    raise
  _remove(debris)


def _remove(debris: _FailedReadDebris) -> None:
  sys.unraisablehook = debris.previous_hook
  logging.getLogger('asyncio').removeFilter(debris)
