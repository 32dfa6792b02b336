"""XLA:CPU settings: the flag that routes convolutions to XLA's own kernels,
and the compiler options of the project's step functions.

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

STEP_COMPILER_OPTIONS go to the project's own jitted steps (train, eval,
predict, the state's initialisation) only, not to every computation of the
process: XLA's older loop emitters compile `configs/fast.py`'s train step in
1.6 s against 2.4 s and the CNN's and `configs/default.py`'s in 25-45% less
time, and the steps run as fast (docs/performance.md). Other backends
ignore it.
"""

import os

YNN_FUSION_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
XLA_CONVOLUTIONS = f'{YNN_FUSION_FLAG}=-individual_convolution'
STEP_COMPILER_OPTIONS = {'xla_cpu_use_fusion_emitters': False}


def prefer_xla_convolutions() -> None:
  """Adds XLA_CONVOLUTIONS to XLA_FLAGS unless it names YNN fusion types."""
  flags = os.environ.get('XLA_FLAGS', '')
  if YNN_FUSION_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {XLA_CONVOLUTIONS}'.strip()
