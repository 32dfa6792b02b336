"""mnist_jax.xla_cpu: convolutions on XLA:CPU run as XLA's own, not YNNPACK's."""

import os
import subprocess
import sys

import pytest

from mnist_jax import xla_cpu

# Compiles one convolution in a fresh process (XLA reads XLA_FLAGS once per
# process) and prints its optimized HLO.
_COMPILE_A_CONVOLUTION = """
import jax, jax.numpy as jnp
import mnist_jax
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
print(conv.lower(jnp.zeros((8, 14, 14, 16)), jnp.zeros((3, 3, 16, 32)))
      .compile().as_text())
"""


def _optimized_hlo(xla_flags: str) -> str:
  env = {**os.environ, 'XLA_FLAGS': xla_flags, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, '-c', _COMPILE_A_CONVOLUTION],
                        env=env, capture_output=True, text=True, check=True,
                        timeout=120).stdout


def test_adds_the_flag_to_what_xla_flags_has(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  xla_cpu.prefer_xla_convolutions()
  assert os.environ['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=2 '
                                     + xla_cpu.XLA_CONVOLUTIONS)
  xla_cpu.prefer_xla_convolutions()  # once only
  assert os.environ['XLA_FLAGS'].count(xla_cpu.YNN_FUSION_FLAG) == 1


def test_leaves_a_users_ynn_setting_alone(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', f'{xla_cpu.YNN_FUSION_FLAG}=')
  xla_cpu.prefer_xla_convolutions()
  assert os.environ['XLA_FLAGS'] == f'{xla_cpu.YNN_FUSION_FLAG}='


@pytest.mark.slow
def test_importing_the_package_compiles_convolutions_as_xlas_own():
  hlo = _optimized_hlo('')
  assert ' convolution(' in hlo and 'ynn_fusion' not in hlo
  # The flag is what does it: with YNN convolutions asked for, XLA wraps the
  # convolution in a YNN fusion, as jaxlib does by default.
  hlo = _optimized_hlo(f'{xla_cpu.YNN_FUSION_FLAG}=+individual_convolution')
  assert 'ynn_fusion' in hlo
