"""XLA:CPU's convolutions: the flag that routes them to XLA's own kernels.

jaxlib 0.10 hands every convolution on CPU to YNNPACK (an XLA "YNN fusion"),
which runs this project's small-channel convolutions, and above all their
weight gradients, several times slower than XLA's own (Eigen) convolution:
the Flax-example CNN's train step takes about half the time without it, on
par with PyTorch on the same CPU (docs/performance.md). The other YNN
fusions (dots, reductions, elementwise) stay: they are faster here.

XLA reads XLA_FLAGS once, when JAX starts its first backend, so the flag
must be in place before the first computation; `import mnist_jax` does it,
unless XLA_FLAGS already says something about YNN fusions (yours win). GPU
and TPU ignore it.
"""

import os

YNN_FUSION_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
XLA_CONVOLUTIONS = f'{YNN_FUSION_FLAG}=-individual_convolution'


def prefer_xla_convolutions() -> None:
  """Adds XLA_CONVOLUTIONS to XLA_FLAGS unless it names YNN fusion types."""
  flags = os.environ.get('XLA_FLAGS', '')
  if YNN_FUSION_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {XLA_CONVOLUTIONS}'.strip()
