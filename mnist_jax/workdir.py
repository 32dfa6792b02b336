"""One writer per workdir: an exclusive lock on WORKDIR/.lock.

Training and the label-error search hold the lock for their whole run;
evaluation and the outlier analysis hold it while they run, or, beside a
training run, read its newest complete checkpoint without it
(`locked_unless_training`). The lock is
`fcntl.flock`, so the kernel releases it when its holder exits, however it
exits: a leftover .lock file never blocks anyone. The file's text names the
holder (command, pid, host, start time) for whoever finds it taken; the file
itself is never removed or replaced, since a second inode would make a
second lock.

With several processes (jax.distributed) process 0 takes the lock for all
and tells the others whether it got it.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import functools
import inspect
import json
import os
import socket
import time
from typing import Callable, Iterator, TypeVar

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

LOCK_NAME = '.lock'
TRAIN = 'train'

# What process 0 found, as broadcast to the others.
_HELD, _SHARED, _BUSY, _FAILED = range(4)


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a workdir's lock, as written in its lock file."""
  command: str  # train, evaluate, outliers or label_errors
  pid: int
  host: str
  since: str  # when the lock was taken, ISO 8601 with the UTC offset

  def __str__(self) -> str:
    return f'{self.command} (pid {self.pid} on {self.host}, since {self.since})'


class WorkdirBusy(BlockingIOError):
  """Another process holds the workdir's lock; `holder` is None where it is
  unknown (a process other than 0, or a holder still writing its name)."""

  def __init__(self, workdir: str, holder: Holder | None):
    who = f'by {holder}' if holder else 'by another process'
    super().__init__(f'workdir {workdir!r} is in use {who}; wait for it to '
                     'end or use another workdir')
    self.holder = holder


def _read_holder(fd: int) -> Holder | None:
  """The holder named in the lock file; None if not yet written (the holder
  writes its name just after taking the lock)."""
  for _ in range(10):
    text = os.pread(fd, 4096, 0).decode(errors='replace')
    try:
      return Holder(**json.loads(text))
    except (ValueError, TypeError):
      time.sleep(0.05)
  return None


def _try_lock(workdir: str, command: str) -> tuple[int | None, Holder | None]:
  """(the locked file's descriptor, None), or (None, the holder) if taken."""
  path = os.path.join(workdir, LOCK_NAME)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  except OSError as e:
    raise OSError(f'workdir {workdir!r}: cannot open its lock file '
                  f'{LOCK_NAME}: {e.strerror or e}') from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _read_holder(fd)
    os.close(fd)
    return None, holder
  holder = Holder(command, os.getpid(), socket.gethostname(),
                  datetime.datetime.now().astimezone().isoformat(timespec='seconds'))
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(dataclasses.asdict(holder)).encode(), 0)
  except OSError as e:
    os.close(fd)
    raise OSError(f'{path}: cannot write: {e.strerror or e}') from None
  return fd, None


def _release(fd: int) -> None:
  """Empties the file, so that it names no one, and lets go: closing the
  descriptor releases the lock."""
  with contextlib.suppress(OSError):
    os.ftruncate(fd, 0)
  os.close(fd)


def _agree(outcome: int) -> int:
  """Process 0's `outcome`, on every process."""
  if jax.process_count() == 1:
    return outcome
  return int(multihost_utils.broadcast_one_to_all(np.int32(outcome)))


@contextlib.contextmanager
def _lock(workdir: str, command: str,
          share_with_training: bool) -> Iterator[Holder | None]:
  fd, holder, error = None, None, None
  if jax.process_index() == 0:
    try:
      fd, holder = _try_lock(workdir, command)
    except OSError as e:
      error = e
  if error:
    outcome = _FAILED
  elif holder is None:
    outcome = _HELD
  elif share_with_training and holder.command == TRAIN:
    outcome = _SHARED
  else:
    outcome = _BUSY
  outcome = _agree(outcome)  # before raising: the others wait for it
  if error:
    raise error
  if outcome == _FAILED:
    raise OSError(f'workdir {workdir!r}: process 0 could not lock it')
  if outcome == _BUSY:
    raise WorkdirBusy(workdir, holder)
  try:
    yield holder
  finally:
    if fd is not None:
      _release(fd)


@contextlib.contextmanager
def locked(workdir: str, command: str) -> Iterator[None]:
  """Holds `workdir`'s lock, or raises WorkdirBusy naming its holder."""
  with _lock(workdir, command, share_with_training=False):
    yield


@contextlib.contextmanager
def locked_unless_training(workdir: str,
                           command: str) -> Iterator[Holder | None]:
  """For readers of checkpoints that write their own files (evaluation,
  outliers). Holds the lock and yields None; or, if a training run holds it,
  holds nothing, logs that training is still running and yields its Holder:
  the reader then reads the newest complete checkpoint (checkpoint.py
  retries one that the run deletes meanwhile) and writes only files training
  never writes. Raises WorkdirBusy if another reader holds it. A workdir
  that does not exist is not locked: there is nothing in it to read, and the
  reader says so.
  """
  if not os.path.isdir(workdir):
    yield None
    return
  with _lock(workdir, command, share_with_training=True) as training:
    if training:
      logging.warning('workdir %s: training is still running there, %s; '
                      'reading its newest complete checkpoint', workdir,
                      training)
    yield training


Function = TypeVar('Function', bound=Callable)


def locks_workdir(command: str) -> Callable[[Function], Function]:
  """Decorates a function with a `workdir` parameter to run inside
  `locked_unless_training(workdir, command)`."""

  def decorate(function: Function) -> Function:
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
      workdir = signature.bind(*args, **kwargs).arguments['workdir']
      with locked_unless_training(workdir, command):
        return function(*args, **kwargs)

    return wrapper

  return decorate
