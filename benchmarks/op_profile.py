"""Where a compiled step's time goes: per-op times from a jax.profiler trace.

Each trace event named after an instruction of the compiled HLO is one
execution of that instruction (a fusion, a convolution, a copy); its `op_name`
metadata says which jax operation it came from, e.g.
`transpose(jvp(ConvNet))/Conv_1/conv_general_dilated` is the gradient of the
second convolution. XLA:CPU records these events only when
`--xla_cpu_enable_xprof_traceme=true` is in XLA_FLAGS before the first
computation (`enable_cpu_op_events`); GPU backends record them anyway.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Any, Callable

import jax

CPU_OP_EVENTS_FLAG = '--xla_cpu_enable_xprof_traceme=true'

# `%name = type op(...), ..., metadata={op_name="..."` in compiled HLO text.
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"', re.MULTILINE)


def enable_cpu_op_events() -> None:
  """Adds CPU_OP_EVENTS_FLAG to XLA_FLAGS; effective only before the first
  computation of the process."""
  flags = os.environ.get('XLA_FLAGS', '')
  if CPU_OP_EVENTS_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {CPU_OP_EVENTS_FLAG}'.strip()


def instruction_ops(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the jax operation it computes (without jit(...)/)."""
  return {name: re.sub(r'^jit\([^)]*\)/', '', op_name)
          for name, op_name in _INSTRUCTION.findall(hlo_text)}


def _trace_events(run: Callable[[], Any]) -> list[dict[str, Any]]:
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      jax.block_until_ready(run())
    paths = glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'),
                      recursive=True)
    if not paths:
      return []
    with gzip.open(paths[0], 'rt') as f:
      return json.load(f).get('traceEvents', [])


def costliest_ops(compiled, run: Callable[[], Any], executions: int,
                  top: int = 15) -> list[dict[str, Any]]:
  """The `top` instructions of `compiled` by traced time while `run()` runs it
  `executions` times: HLO name, jax op, ms per execution and share of the
  traced total. Empty if the backend recorded no per-op events."""
  ops = instruction_ops(compiled.as_text())
  seconds = collections.Counter()
  for event in _trace_events(run):
    if event.get('ph') == 'X' and event.get('name') in ops:
      seconds[event['name']] += event['dur'] / 1e6
  total = sum(seconds.values())
  return [{'hlo': name, 'op': ops[name],
           'ms': round(1000 * s / executions, 4), 'share': round(s / total, 4)}
          for name, s in seconds.most_common(top)]
