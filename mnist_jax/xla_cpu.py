"""XLA:CPU flags this project sets: its own convolutions, its older emitters.

- Convolutions: jaxlib 0.10 hands every convolution on CPU to YNNPACK (an
  XLA "YNN fusion"), which runs this project's small-channel convolutions,
  and above all their weight gradients, several times slower than XLA's own
  (Eigen) convolution: the Flax-example CNN's train step takes about half
  the time without it, on par with PyTorch on the same CPU. The other YNN
  fusions (dots, reductions, elementwise) stay: they are faster here.
- Emitters: XLA's older loop emitters (`--xla_cpu_use_fusion_emitters=false`)
  compile the train steps in 25-45% less time, and the steps run as fast;
  compilation is a fifth of a `configs/fast.py` run.

Measurements: docs/performance.md. XLA reads XLA_FLAGS once, when JAX starts
its first backend, so the flags must be in place before the first
computation; `import mnist_jax` does it, except for a flag XLA_FLAGS already
names (yours win). GPU and TPU ignore them.
"""

import os

YNN_FUSION_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
FUSION_EMITTERS_FLAG = '--xla_cpu_use_fusion_emitters'
# Each flag and the value set unless XLA_FLAGS names the flag.
DEFAULTS = {YNN_FUSION_FLAG: '-individual_convolution',
            FUSION_EMITTERS_FLAG: 'false'}


def set_default_flags() -> None:
  """Adds each of DEFAULTS to XLA_FLAGS unless XLA_FLAGS names it."""
  flags = os.environ.get('XLA_FLAGS', '')
  added = [f'{name}={value}' for name, value in DEFAULTS.items()
           if name not in flags]
  os.environ['XLA_FLAGS'] = ' '.join([flags, *added]).strip()
