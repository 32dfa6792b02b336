"""Atomic file output: a reader never sees a half-written result, and a
failed write (a full disk, a read-only folder) leaves the old file whole."""

import contextlib
import csv
import io
import json
import os
import tempfile
from typing import Any, Iterable, Iterator, Sequence


def _read_umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# Read once at import, before any thread starts: os.umask can only be read by
# setting it, which would race with a thread creating files.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; renames it onto `path` on success.

  On an exception the temporary file is removed and `path` is left as it was;
  an OSError (from this or from the caller's writing) becomes one that names
  `path` and the cause.
  """
  directory = os.path.dirname(os.path.abspath(path))
  suffix = os.path.splitext(path)[1]  # matplotlib picks the format from it
  tmp_path = None
  try:
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix=suffix)
    os.close(fd)
    # mkstemp makes the file owner-only; give the result the mode a plain
    # open() would, so results stay readable as the umask intends.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    yield tmp_path
    os.replace(tmp_path, path)
  except OSError as e:
    raise OSError(f'{path}: cannot write: {e.strerror or e}') from e
  finally:
    if tmp_path and os.path.exists(tmp_path):
      os.remove(tmp_path)


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp_path:
    with open(tmp_path, 'w') as f:
      f.write(text)


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A header line of `columns`, then `rows`, with '\\n' line ends."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(columns)
  writer.writerows(rows)
  return out.getvalue()


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def ensure_writable_dir(path: str, name: str = 'workdir') -> str:
  """Creates `path` if needed and checks that files can be written in it."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix='.write-test-'):
      pass
  except OSError as e:
    raise OSError(f'{name} {path!r} is not a writable directory: '
                  f'{e.strerror or e}') from None
  return path


def require_file(path: str, what: str) -> str:
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: {what} not found')
  return path


def ensure_writable_file_path(path: str, name: str) -> str:
  """Checks that `path` can be written as a file (its folder is created)."""
  if os.path.isdir(path):
    raise IsADirectoryError(f'{name} {path!r} is a directory, not a file name')
  ensure_writable_dir(os.path.dirname(os.path.abspath(path)), name)
  return path


def check_output_paths(workdir: str, names: Sequence[str]) -> list[str]:
  """The paths of `names` in `workdir`, each checked to be writable as a file.

  Called before anything is computed, so that a name taken by a folder stops
  the run before any result of the set is written over.
  """
  return [ensure_writable_file_path(os.path.join(workdir, name), 'workdir')
          for name in names]
