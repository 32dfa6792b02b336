"""Per-epoch metrics: WORKDIR/metrics.jsonl, TensorBoard scalars, absl logs."""

import json
import os
from typing import Any

from absl import logging

from mnist_jax import io_utils
from mnist_jax import parallel


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of WORKDIR/metrics.jsonl, oldest first ([] if none)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
  """Appends one JSON object per epoch; only process 0 writes.

  On resumption, records of epochs after the restored checkpoint (written
  before a crash that lost their checkpoint) are dropped, so the file always
  matches the checkpoint the run continues from.
  """

  def __init__(self, workdir: str, resume_after_epoch: int):
    self._path = os.path.join(workdir, 'metrics.jsonl')
    self._records = [r for r in read_metrics(workdir)
                     if r['epoch'] <= resume_after_epoch]
    self._writer = None
    if parallel.is_main_process():
      io_utils.write_text(self._path,
                          ''.join(json.dumps(r) + '\n' for r in self._records))
      from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
      self._writer = tensorboard.SummaryWriter(workdir)

  def last(self) -> dict[str, Any]:
    return self._records[-1] if self._records else {}

  def write(self, record: dict[str, Any]) -> None:
    self._records.append(record)
    logging.info('epoch %d: %s', record['epoch'], ', '.join(
        f'{k} {v:.4f}' for k, v in record.items() if isinstance(v, float)))
    if self._writer is None:
      return
    with open(self._path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for key, value in record.items():
      if key != 'epoch':
        self._writer.scalar(key, value, record['epoch'])
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
