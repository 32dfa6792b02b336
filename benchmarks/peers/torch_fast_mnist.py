"""Peer for time to 99%: the fastest published MNIST recipe, in PyTorch.

tuomaso/train_mnist_fast (0.76 s to 99% on a laptop GPU): conv 1->24 5x5,
max pool, ReLU, conv 24->32 3x3, max pool, ReLU, dense 800->256->10; Adam
(lr 0.01, betas 0.7 and 0.9) with a one-cycle schedule, batch 256 (the last
batch of an epoch smaller), one epoch, all data in memory, normalised with
MNIST's mean and deviation. Timed from the first step to the end of each
epoch's evaluation on every test image; data loading and imports excluded.

    python -m peers.torch_fast_mnist --data=mnist.npz [--epochs=1] [--seed=0]

`--data` is an .npz of uint8 `train_images`, `test_images` ([N, 28, 28] or
[N, 28, 28, 1]) and integer `train_labels`, `test_labels`. Prints one JSON
object: the seconds and test accuracy after each epoch.
"""

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = 0.1307, 0.3081
BATCH_SIZE = 256
EVAL_BATCH_SIZE = 1000


class Net(nn.Module):
  """The recipe's network (784 -> 24x24x24 -> 12x12 -> 10x10x32 -> 5x5)."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 24, 5)
    self.conv2 = nn.Conv2d(24, 32, 3)
    self.fc1 = nn.Linear(800, 256)
    self.fc2 = nn.Linear(256, 10)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(F.max_pool2d(self.conv1(x), 2))
    x = F.relu(F.max_pool2d(self.conv2(x), 2))
    return self.fc2(F.relu(self.fc1(x.flatten(1))))


def to_tensor(images: np.ndarray, device: str = 'cpu') -> torch.Tensor:
  """uint8 images [N, 28, 28(, 1)] as normalised float32 [N, 1, 28, 28]."""
  x = torch.tensor(images.reshape(len(images), 28, 28), dtype=torch.float32)
  return ((x / 255 - MEAN) / STD).unsqueeze(1).to(device)


def test_accuracy(model: nn.Module, images: torch.Tensor,
                  labels: torch.Tensor) -> float:
  model.eval()
  with torch.no_grad():
    correct = sum(
        (model(images[i:i + EVAL_BATCH_SIZE]).argmax(1) ==
         labels[i:i + EVAL_BATCH_SIZE]).sum().item()
        for i in range(0, len(labels), EVAL_BATCH_SIZE))
  return correct / len(labels)


def _sync(device: str) -> None:
  if device.startswith('cuda'):
    torch.cuda.synchronize()


def train(train_images: np.ndarray, train_labels: np.ndarray,
          test_images: np.ndarray, test_labels: np.ndarray, *, epochs: int = 1,
          seed: int = 0, max_steps: int | None = None,
          device: str = 'cpu') -> dict[str, Any]:
  """Trains the recipe; `max_steps` stops each epoch early (for tests).

  Seeds, data preparation and the order of random draws are those of
  `../shared/peers/pytorch_fast_mnist.py`, so the same seed gives the same
  accuracy.
  """
  torch.manual_seed(seed)
  x_train, x_test = to_tensor(train_images, device), to_tensor(test_images, device)
  y_train = torch.tensor(train_labels, dtype=torch.long, device=device)
  y_test = torch.tensor(test_labels, dtype=torch.long, device=device)
  model = Net().to(device)
  steps = math.ceil(len(x_train) / BATCH_SIZE)
  optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.7, 0.9))
  schedule = torch.optim.lr_scheduler.OneCycleLR(
      optimizer, max_lr=0.01, steps_per_epoch=steps, epochs=epochs,
      cycle_momentum=False)
  records = []
  start = time.perf_counter()
  for epoch in range(1, epochs + 1):
    model.train()
    order = torch.randperm(len(x_train)).to(device)
    for i in range(steps if max_steps is None else min(steps, max_steps)):
      rows = order[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]
      optimizer.zero_grad()
      F.cross_entropy(model(x_train[rows]), y_train[rows]).backward()
      optimizer.step()
      schedule.step()
    accuracy = test_accuracy(model, x_test, y_test)
    _sync(device)
    records.append({'epoch': epoch, 'test_accuracy': accuracy,
                    'elapsed': time.perf_counter() - start})
  return {'peer': 'pytorch train_mnist_fast', 'torch': torch.__version__,
          'threads': torch.get_num_threads(), 'device': device,
          'epochs': records, 'seconds': records[-1]['elapsed'],
          'test_accuracy': records[-1]['test_accuracy'],
          'test_examples': len(y_test)}


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', required=True, help='.npz of the four arrays')
  parser.add_argument('--epochs', type=int, default=1)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--max_steps', type=int, default=None)
  parser.add_argument('--device', default='cpu')
  args = parser.parse_args(argv)
  with np.load(args.data) as data:
    arrays = {name: data[name] for name in data.files}
  result = train(arrays['train_images'], arrays['train_labels'],
                 arrays['test_images'], arrays['test_labels'],
                 epochs=args.epochs, seed=args.seed, max_steps=args.max_steps,
                 device=args.device)
  print(json.dumps(result))


if __name__ == '__main__':
  main(sys.argv[1:])
