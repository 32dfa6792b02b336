"""Flag parsing for the scripts: every bad flag or config file as one
UserError, where absl and ml_collections would print tracebacks."""

import sys

from absl import flags
import ml_collections
from ml_collections.config_flags import config_flags
from ml_collections.config_flags import config_path

from mnist_jax.errors import UserError


class _ConfigLoadError(Exception):
  """A config flag whose file did not load (ml_collections defers that)."""

  def __init__(self, name: str, error: BaseException):
    super().__init__(name)
    self.name, self.error = name, error


# Config flags defined through define_config_file: their default path, and
# any error raised while defining them.
_DEFAULT_PATHS: dict[str, str] = {}
_DEFINITION_ERRORS: list[str] = []


def define_config_file(name: str, default: str, help_text: str) -> None:
  """ml_collections' DEFINE_config_file (locked), whose errors wait for
  parse_flags: without `--NAME` on the command line, ml_collections loads the
  default file and applies the `--NAME.KEY` overrides right here, at import,
  before absl's parsing could report them."""
  _DEFAULT_PATHS[name] = default
  try:
    holder = config_flags.DEFINE_config_file(name, default, help_text,
                                             lock_config=True)
  except Exception as e:  # pylint: disable=broad-except
    _DEFINITION_ERRORS.append(_explain_failure(sys.argv, name, default, e))
    return
  # Listed by the script's --help, as if the script had defined it (absl
  # names the main module by sys.argv[0]).
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])


def _innermost_reason(error: BaseException) -> str:
  """The last line of the error at the bottom of a `raise ... from` chain:
  ml_collections wraps a config file's own error in one or two others, and
  its "Error whilst parsing config file" wrapper ends with that error's
  traceback, whose last line is the error itself."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def _config_flag_names() -> list[str]:
  return [name for name, flag in flags.FLAGS._flags().items()  # pylint: disable=protected-access
          if config_flags.is_config_flag(flag)]


def _load_error(config) -> BaseException | None:
  """Why a config flag's value is not a config: ml_collections leaves an
  _ErrorConfig holding the error for a file that failed to load."""
  if isinstance(config, ml_collections.ConfigDict):
    return None
  if isinstance(config, config_flags._ErrorConfig):  # pylint: disable=protected-access
    return config._error  # pylint: disable=protected-access
  return TypeError(f'get_config() returned {type(config).__name__}, not a ConfigDict')


def has_key(config: ml_collections.ConfigDict, key: str) -> bool:
  """Whether `config` has the dotted `key` (e.g. 'model_kwargs.widths')."""
  try:
    config_path.get_value(key, config)
  except (AttributeError, KeyError, IndexError, ValueError):
    return False
  return True


def _missing_key(argv: list[str], name: str, path: str,
                 config: ml_collections.ConfigDict) -> str | None:
  """The first `--NAME.KEY=...` argument whose KEY `config` does not have."""
  for arg in argv[1:]:
    if arg.startswith(f'--{name}.'):
      key = arg[len(name) + 3:].split('=', 1)[0]
      if not has_key(config, key):
        return f'--{name}.{key}: {path} has no such key'
  return None


def _explain_failure(argv: list[str], name: str, path: str,
                     error: BaseException) -> str:
  """Why parsing failed: the config file, or an override of a key the
  file's config does not have."""
  try:
    config = config_flags.ConfigFileFlagParser(name).parse(path)
  except Exception:  # pylint: disable=broad-except
    return f'--{name}={path}: {_innermost_reason(error)}'  # the file itself
  load_error = _load_error(config)
  if load_error is not None:
    return f'--{name}={path}: {_innermost_reason(load_error)}'
  return (_missing_key(argv, name, path, config) or
          f'--{name}={path}: {_innermost_reason(error)}')


def _config_path(argv: list[str], name: str) -> str:
  """The config file absl will use: the last `--NAME=F`, `-NAME=F` or
  `--NAME F` in `argv`, else the flag's default."""
  path = None
  for i, arg in enumerate(argv[1:], start=1):
    flag, _, value = arg.lstrip('-').partition('=')
    if not arg.startswith('-') or flag != name:
      continue
    if '=' in arg:
      path = value
    elif i + 1 < len(argv):
      path = argv[i + 1]
  return path if path is not None else _DEFAULT_PATHS[name]


def _check_configs_loaded() -> None:
  """ml_collections defers a config file's load error until first use."""
  for name in _config_flag_names():
    error = _load_error(flags.FLAGS[name].value)
    if error is not None:
      raise _ConfigLoadError(name, error)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every failure as one UserError: a bad flag
  value, a config file that does not load, an override of a key that the
  config file does not have (ml_collections raises those unwrapped)."""
  if _DEFINITION_ERRORS:
    raise UserError(_DEFINITION_ERRORS[0])
  try:
    remaining = flags.FLAGS(argv)
    _check_configs_loaded()
    return remaining
  except _ConfigLoadError as e:
    raise UserError(f'--{e.name}={_config_path(argv, e.name)}: '
                    f'{_innermost_reason(e.error)}') from None
  except flags.Error as e:
    lines = str(e).splitlines()
    # A config file's TypeError/ValueError arrives with its traceback inside.
    raise UserError(lines[0] if len(lines) == 1 else
                    f'{lines[0].split(": ", 1)[0]}: {_innermost_reason(e)}') from None
  except Exception as e:  # pylint: disable=broad-except
    for name in _config_flag_names():
      path = _config_path(argv, name)
      raise UserError(_explain_failure(argv, name, path, e)) from None
    raise
