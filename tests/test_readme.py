"""The README's first Python example runs as it is, from any folder."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


def first_python_block(markdown: str) -> str:
  match = re.search(r'^```python\n(.*?)^```', markdown, re.M | re.S)
  assert match, 'README.md has no ```python block'
  return match.group(1)


def test_first_python_block_extraction():
  markdown = 'text\n```sh\nls\n```\n```python\nx = 1\n```\n```python\ny\n```\n'
  assert first_python_block(markdown) == 'x = 1\n'


@pytest.mark.slow  # a fresh interpreter imports jax and compiles a model
def test_readme_example_runs(tmp_path):
  with open(os.path.join(REPO_ROOT, 'README.md')) as f:
    code = first_python_block(f.read())
  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
