"""Per-epoch metrics: WORKDIR/metrics.jsonl, TensorBoard scalars, absl logs."""

import concurrent.futures
import json
import os
import re
from typing import Any

from absl import logging

from mnist_jax import io_utils
from mnist_jax import parallel
from mnist_jax import tensorflow_env


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of WORKDIR/metrics.jsonl, oldest first ([] if none)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}: line {number} is not JSON ({e.msg}); '
                        'remove the line or use a new workdir') from None
      if not (isinstance(record, dict) and isinstance(record.get('epoch'), int)
              and isinstance(record.get('elapsed', 0.0), (int, float))):
        raise ValueError(f'{path}: line {number} is not an epoch\'s record '
                        '(a JSON object with an integer "epoch" and a number '
                        '"elapsed"); remove the line or use a new workdir')
      records.append(record)
  return records


def _open_tensorboard(workdir: str):
  tensorflow_env.import_tensorflow()
  from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
  return tensorboard.SummaryWriter(workdir)


class MetricsLog:
  """metrics.jsonl, one JSON object per epoch, and TensorBoard scalars;
  only process 0 writes.

  On resumption, records of epochs after the restored checkpoint (written
  before a crash that lost their checkpoint) are dropped, so the file always
  matches the checkpoint the run continues from.

  TensorBoard events are written on a background thread: the event writer
  imports TensorFlow, seconds of start-up that would otherwise stall training.
  """

  def __init__(self, workdir: str, resume_after_epoch: int):
    self._path = os.path.join(workdir, 'metrics.jsonl')
    self._records = [r for r in read_metrics(workdir)
                     if r['epoch'] <= resume_after_epoch]
    self._background = None
    if parallel.is_main_process():
      self._write_records()
      self._background = concurrent.futures.ThreadPoolExecutor(1)
      self._writer = self._background.submit(_open_tensorboard, workdir)

  def last(self) -> dict[str, Any]:
    return self._records[-1] if self._records else {}

  def write(self, record: dict[str, Any]) -> None:
    self._records.append(record)
    logging.info('epoch %d: %s', record['epoch'], ', '.join(
        f'{k} {v:.4f}' for k, v in record.items() if isinstance(v, float)))
    if self._background is None:
      return
    self._write_records()
    self._background.submit(self._write_scalars, record)

  def _write_records(self) -> None:
    # Rewritten whole, not appended: a full disk must not leave half a line.
    io_utils.write_text(self._path,
                        ''.join(json.dumps(r) + '\n' for r in self._records))

  def write_hparams(self, config: Any) -> None:
    """The run's config as TensorBoard hparams (process 0 only)."""
    if self._background is not None:
      hparams = {key: value if isinstance(value, (bool, int, float, str))
                 else str(value) for key, value in config.to_dict().items()}
      self._background.submit(lambda: self._writer.result().hparams(hparams))

  def write_step_scalars(self, step: int, scalars: dict[str, float]) -> None:
    """Per-step TensorBoard scalars (process 0 only), by global step."""
    if self._background is not None:
      self._background.submit(self._write_step_scalars, step, scalars)

  def _write_step_scalars(self, step: int, scalars: dict[str, float]) -> None:
    writer = self._writer.result()
    for key, value in scalars.items():
      writer.scalar(key, value, step)

  def _write_scalars(self, record: dict[str, Any]) -> None:
    writer = self._writer.result()
    for key, value in record.items():
      if key not in ('epoch', 'elapsed', 'test_examples'):
        writer.scalar(key, value, record['epoch'])
    writer.flush()

  def close(self) -> None:
    """Waits for the TensorBoard writes; a failed one (a full disk) is an
    OSError naming the file and the cause."""
    if self._background is None:
      return
    try:
      self._background.submit(lambda: self._writer.result().close()).result()
    # TensorFlow reports a failed write as its own errors, not OSError:
    # "{{function_node ...}} /w/events.out...; No space left on device".
    except Exception as e:  # pylint: disable=broad-exception-caught
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise OSError('cannot write TensorBoard events: ' +
                    re.sub(r'^\{\{.*?\}\}\s*', '', first_line)) from e
    finally:
      self._background.shutdown()
