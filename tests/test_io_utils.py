"""Result files: written whole or not at all, with the umask's permissions."""

import os
import stat

import pytest

from mnist_jax import io_utils


def test_write_text_replaces_the_file_whole(tmp_path):
  path = tmp_path / 'r.json'
  io_utils.write_json(str(path), {'a': 1})
  io_utils.write_json(str(path), {'a': 2})
  assert path.read_text() == '{\n  "a": 2\n}\n'
  assert os.listdir(tmp_path) == ['r.json']  # no temporary file left


def test_a_failed_write_keeps_the_old_file(tmp_path):
  path = tmp_path / 'r.txt'
  path.write_text('old')
  with pytest.raises(RuntimeError):
    with io_utils.atomic_path(str(path)) as tmp:
      with open(tmp, 'w') as f:
        f.write('half')
      raise RuntimeError('crashed mid-write')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['r.txt']


def test_results_get_the_mode_a_plain_open_would(tmp_path, monkeypatch):
  # tempfile.mkstemp alone would leave every result owner-only (0600).
  for umask in (0o022, 0o077):
    monkeypatch.setattr(io_utils, '_UMASK', umask)
    path = tmp_path / f'{umask:o}.txt'
    io_utils.write_text(str(path), 'x')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_the_umask_is_read_without_changing_it():
  before = os.umask(0o027)
  try:
    assert io_utils._read_umask() == 0o027
    assert io_utils._read_umask() == 0o027
  finally:
    os.umask(before)


def test_output_paths_are_checked_before_anything_is_written(tmp_path):
  (tmp_path / 'b.json').mkdir()
  assert io_utils.check_output_paths(str(tmp_path), ['a.csv']) == [
      str(tmp_path / 'a.csv')]
  with pytest.raises(IsADirectoryError, match="^workdir '.*/b.json' is a "
                     'directory, not a file name$'):
    io_utils.check_output_paths(str(tmp_path), ['a.csv', 'b.json'])
  assert os.listdir(tmp_path) == ['b.json']


def test_an_output_path_gets_its_folder(tmp_path):
  path = str(tmp_path / 'new' / 'f.json')
  assert io_utils.ensure_writable_file_path(path, 'out') == path
  assert os.path.isdir(tmp_path / 'new')
