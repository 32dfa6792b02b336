"""Where a compiled step's time goes: per-op times from a jax.profiler trace.

The trace stays in the folder given (`WORKDIR/plugins/profile/RUN/`), where
TensorBoard's profile plugin opens it (`tensorboard --logdir WORKDIR`).
Each trace event named after an instruction of the compiled HLO is one
execution of that instruction (a fusion, a convolution, a copy); its
`op_name` metadata says which jax operation it came from, e.g.
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
from typing import Any, Callable

import jax

CPU_OP_EVENTS_FLAG = '--xla_cpu_enable_xprof_traceme=true'

# `%name = type op(...), ...` in compiled HLO text: the instruction's name
# and the rest of its line.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$', re.MULTILINE)
_OP_NAME = re.compile(r'metadata=\{op_name="([^"]*)"')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
# A computation's root: `ROOT %name = f32[32,3,3,64]{...} convolution(`.
_ROOT = re.compile(r'^\s*ROOT %?[\w.\-]+ = (\S+?)(?:\{[\d,]*\})? ([\w-]+)\(',
                   re.MULTILINE)


def enable_cpu_op_events() -> None:
  """Adds CPU_OP_EVENTS_FLAG to XLA_FLAGS; effective only before the first
  computation of the process."""
  flags = os.environ.get('XLA_FLAGS', '')
  if CPU_OP_EVENTS_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {CPU_OP_EVENTS_FLAG}'.strip()


def _computation_root(hlo_text: str, name: str) -> str:
  """'convolution f32[32,3,3,64]': what computation `name` returns."""
  body = re.search(rf'^%?{re.escape(name)} .*?\{{\n(.*?)^\}}', hlo_text,
                   re.MULTILINE | re.DOTALL)
  root = _ROOT.search(body.group(1)) if body else None
  return f'{root.group(2)} {root.group(1)}' if root else ''


def instruction_ops(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the jax operation it computes (without
  jit(...)/), or for an instruction without that metadata (XLA leaves it off
  some gradients) what its fused computation returns."""
  ops = {}
  for name, rest in _INSTRUCTION.findall(hlo_text):
    op_name, calls = _OP_NAME.search(rest), _CALLS.search(rest)
    if op_name:
      ops[name] = re.sub(r'^jit\([^)]*\)/', '', op_name.group(1))
    elif calls:
      ops[name] = _computation_root(hlo_text, calls.group(1))
    else:
      ops[name] = ''
  return ops


def trace(run: Callable[[], Any], trace_dir: str) -> str:
  """Traces `run()` into `trace_dir`; returns the perfetto trace's path."""
  before = set(glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'),
                         recursive=True))
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    jax.block_until_ready(run())
  after = set(glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'),
                        recursive=True))
  if not after - before:
    raise OSError(f'jax.profiler wrote no trace to {trace_dir!r}')
  return max(after - before, key=os.path.getmtime)


def op_seconds(trace_path: str, ops: dict[str, str]) -> collections.Counter:
  """Total traced seconds of each instruction named in `ops`."""
  with gzip.open(trace_path, 'rt') as f:
    events = json.load(f).get('traceEvents', [])
  seconds = collections.Counter()
  for event in events:
    if event.get('ph') == 'X' and event.get('name') in ops:
      seconds[event['name']] += event['dur'] / 1e6
  return seconds


def costliest_ops(hlo_text: str, seconds: collections.Counter, executions: int,
                  top: int = 15) -> list[dict[str, Any]]:
  """The `top` instructions by traced time over `executions` runs: HLO name,
  jax op, ms per execution and share of the traced total."""
  ops = instruction_ops(hlo_text)
  total = sum(seconds.values())
  return [{'hlo': name, 'op': ops.get(name, ''),
           'ms': round(1000 * s / executions, 4), 'share': round(s / total, 4)}
          for name, s in seconds.most_common(top)]


def profile(hlo_text: str, run: Callable[[], Any], executions: int,
            trace_dir: str, top: int = 15) -> dict[str, Any]:
  """Traces `run()` (which runs the compiled program `executions` times)
  into `trace_dir` and lists its costliest ops; the list is empty if the
  backend recorded no per-op events."""
  path = trace(run, trace_dir)
  seconds = op_seconds(path, instruction_ops(hlo_text))
  return {'trace': os.path.dirname(path),
          'top_ops': costliest_ops(hlo_text, seconds, executions, top)}
