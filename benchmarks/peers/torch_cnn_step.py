"""Peer for step time: the Flax MNIST example's CNN train step, in PyTorch.

conv 1->32 3x3 (same padding), ReLU, 2x2 average pool, conv 32->64 3x3,
ReLU, average pool, dense 3136->256, ReLU, dense 256->10; SGD with momentum
0.9, learning rate 0.1, batch 128 of random images in [0, 1) drawn from 20
batches held in memory, as `../shared/peers/pytorch_cnn_step.py`.

    python -m peers.torch_cnn_step [--steps=60] [--warmup=5]

Prints one JSON object with the seconds of each timed step (after the
warm-up steps) and their median in ms.
"""

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BATCH_SIZE = 128
NUM_BATCHES = 20


class FlaxExampleCNN(nn.Module):
  """The network of configs/cnn.py (mnist_jax.models.CNN)."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
    self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
    self.fc1 = nn.Linear(3136, 256)
    self.fc2 = nn.Linear(256, 10)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
    x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
    return self.fc2(F.relu(self.fc1(x.flatten(1))))


def step_seconds(steps: int = 60, warmup: int = 5, batch_size: int = BATCH_SIZE,
                 seed: int = 0, device: str = 'cpu') -> list[float]:
  """Wall seconds of each of `steps` train steps after `warmup` untimed ones."""
  torch.manual_seed(seed)
  model = FlaxExampleCNN().to(device)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  images = torch.rand(NUM_BATCHES, batch_size, 1, 28, 28, device=device)
  labels = torch.randint(0, 10, (NUM_BATCHES, batch_size), device=device)

  def step(i: int) -> None:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images[i % NUM_BATCHES]),
                           labels[i % NUM_BATCHES])
    loss.backward()
    optimizer.step()
    if device.startswith('cuda'):
      torch.cuda.synchronize()

  for i in range(warmup):
    step(i)
  times = []
  for i in range(steps):
    start = time.perf_counter()
    step(warmup + i)
    times.append(time.perf_counter() - start)
  return times


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=60)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--batch_size', type=int, default=BATCH_SIZE)
  parser.add_argument('--device', default='cpu')
  args = parser.parse_args(argv)
  times = step_seconds(args.steps, args.warmup, args.batch_size,
                       device=args.device)
  result: dict[str, Any] = {
      'peer': 'pytorch flax-example CNN step', 'torch': torch.__version__,
      'threads': torch.get_num_threads(), 'device': args.device,
      'batch_size': args.batch_size, 'step_seconds': times,
      'step_ms': 1000 * statistics.median(times)}
  print(json.dumps(result))


if __name__ == '__main__':
  main(sys.argv[1:])
