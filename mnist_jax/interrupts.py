"""SIGINT and SIGTERM as requests to stop at the next safe point.

Inside `StopRequests()` the two signals only set a flag that the training
loop reads between steps (a Python attribute: no device sync); it then saves
a checkpoint and raises `Interrupted`. A second signal of the same kind acts
as it would have without this (Ctrl-C twice stops at once). The handlers
before are restored on exit, so that no process-wide state outlives the
loop. Python runs signal handlers in the main thread only, so elsewhere
(a loop started on another thread) nothing is installed and signals keep
their usual effect.
"""

import signal
import threading
from types import FrameType

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
  """Training stopped cleanly on a signal; `signal_number` says which. A
  KeyboardInterrupt, so that `except Exception` lets it through as it would
  Ctrl-C."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.signal_number = signal_number


class StopRequests:
  """A context manager; `signal_number` is the first signal received, or None."""

  def __init__(self):
    self.signal_number: int | None = None
    self._previous = {}

  def __enter__(self) -> 'StopRequests':
    if threading.current_thread() is threading.main_thread():
      for signal_number in SIGNALS:
        self._previous[signal_number] = signal.signal(signal_number,
                                                      self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signal_number, handler in self._previous.items():
      # None: a handler installed outside Python, which Python cannot restore.
      signal.signal(signal_number,
                    signal.SIG_DFL if handler is None else handler)
    self._previous = {}

  def _handle(self, signal_number: int, frame: FrameType | None) -> None:
    del frame
    if self.signal_number is None:
      self.signal_number = signal_number
    previous = self._previous[signal_number]
    signal.signal(signal_number, signal.SIG_DFL if previous is None else previous)

  def stop_now(self, sync_point: bool) -> bool:
    """Whether to stop after the current step. A single process stops at
    once; several stop together, at the next `sync_point` (a step every
    process reaches at the same time) after any of them was signalled."""
    if jax.process_count() == 1:
      return self.signal_number is not None
    if not sync_point:
      return False
    signalled = multihost_utils.process_allgather(
        np.int32(self.signal_number is not None))
    return bool(np.any(signalled))

  def interrupted(self, message: str) -> Interrupted:
    """The exception to raise once stopped: named after the signal received
    (SIGTERM in a process stopped because another one was signalled)."""
    signal_number = self.signal_number or signal.SIGTERM
    return Interrupted(
        f'stopped by {signal.Signals(signal_number).name}: {message}',
        signal_number)
