"""The scripts' edge: flags in, one-line errors out.

The library raises ordinary exceptions that name its own parameters
(`config.batch_size`, `workdir`). `run` turns those into one line,
`error: --config.batch_size: ...`, naming the script's flags, and exit code
2; bad flags and config files that do not load end the same way. An
interrupt (Ctrl-C, or SIGTERM during training) is one line too, with exit
code 128 + the signal's number: 130, 143. Set MNIST_JAX_TRACEBACK=1 to see
the traceback instead.
"""

import os
import re
import signal
import sys
from typing import Any, Callable, NoReturn

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_dict
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from mnist_jax import parallel

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs')

# What bad input raises, in the library and in the libraries it calls.
INPUT_ERRORS = (ValueError, TypeError, OSError, ArithmeticError)

_definition_errors: list[str] = []


def define_config_flag(default: str = 'default.py') -> flags.FlagHolder | None:
  """`--config`, a get_config() file (locked), relative paths from the
  current directory; `default` is a file in the repository's configs/."""
  default_path = os.path.join(CONFIGS_DIR, default)
  try:
    holder = config_flags.DEFINE_config_file(
        'config', default_path, 'Config file (a get_config() module); '
        'override any key with --config.KEY=VALUE.', lock_config=True)
  # Without --config on the command line, ml_collections loads the default
  # file and applies --config.KEY overrides here, before flags are parsed.
  except Exception as e:  # pylint: disable=broad-exception-caught
    _definition_errors.append(_config_error(default_path, sys.argv, e))
    return None
  # Listed by the script's --help (absl names the main module by argv[0]).
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS['config'])
  return holder


def innermost_line(error: BaseException) -> str:
  """The last line of the error at the bottom of a `raise ... from` chain:
  ml_collections wraps a config file's own error, with its traceback, in one
  or two others."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def fail(message: str, exit_code: int = 2) -> NoReturn:
  """Prints `error: message` and exits at once.

  os._exit: after a failed checkpoint read, orbax's unfinished background
  reads would print their own tracebacks while the interpreter shuts down.
  """
  print(f'error: {message}', file=sys.stderr, flush=True)
  logging.flush()
  os._exit(exit_code)  # pylint: disable=protected-access


def _config_problem(config: Any) -> str | None:
  """Why `config`, what a config file's get_config() returned, is no
  ConfigDict; None if it is one."""
  if isinstance(config, config_dict.ConfigDict):
    return None
  try:
    # ml_collections defers the error (an OSError) of a file that did not
    # load to the first attribute read of the object it returns instead.
    getattr(config, 'keys', None)
  except Exception as e:  # pylint: disable=broad-exception-caught
    return innermost_line(e)
  return f'get_config() returned {type(config).__name__}, not a ConfigDict'


def _check_config_loaded(name: str) -> None:
  problem = _config_problem(flags.FLAGS[name].value)
  if problem:
    path = config_flags.get_config_filename(flags.FLAGS[name])
    fail(f'--{name}={path}: {problem}')


def _config_args(argv: list[str]) -> tuple[str | None, list[str]]:
  """The last `--config` value in argv (None if none) and the KEYs of its
  `--config.KEY` overrides, --flagfile contents included (as ml_collections
  reads them)."""
  try:
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
  except flags.Error:
    pass  # absl reports it
  path, keys = None, []
  for arg, after in zip(argv, [*argv[1:], None]):
    if match := re.fullmatch(r'--?config(?:=(.*))?', arg, re.DOTALL):
      path = match[1] if match[1] is not None else after
    elif match := re.match(r'--?(?:no)?config\.([^=]+)', arg):
      keys.append(match[1])
  return path, keys


def _load_config(path: str) -> Any:
  """get_config()'s result for `path`, loaded anew without overrides."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', path, flag_values=flag_values,
                                  lock_config=False, sys_argv=['load'])
  return flag_values['config'].value


def _config_error(path: str, argv: list[str], error: Exception) -> str:
  """`error`, raised while ml_collections loaded config file `path` with
  argv's overrides, as one line naming the file or the override's flag."""
  try:
    config = _load_config(path)
  except Exception as e:  # pylint: disable=broad-exception-caught
    return f'--config={path}: {innermost_line(e)}'
  problem = _config_problem(config)
  if problem:
    return f'--config={path}: {problem}'
  for key in _config_args(argv)[1]:
    try:
      config_path.get_value(key, config)
    except (KeyError, AttributeError, IndexError, ValueError):
      return f'--config.{key}: {path} has no such key'
  return f'--config={path}: {innermost_line(error)}'


def _parse_flags(argv: list[str]) -> list[str]:
  if _definition_errors:
    fail(_definition_errors[0])
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    lines = str(e).splitlines()
    fail(lines[0] if len(lines) == 1 else
         f'{lines[0].split(": ", 1)[0]}: {innermost_line(e)}')
  except Exception as e:  # pylint: disable=broad-exception-caught
    # ml_collections raises unwrapped what fails as it loads a --config file
    # and looks up its overrides' keys.
    path = _config_args(argv)[0]
    fail(_config_error(path, argv, e) if path is not None else
         innermost_line(e))
  if 'config' in flags.FLAGS:
    _check_config_loaded('config')
  if len(remaining) > 1:
    fail(f'unexpected arguments {" ".join(remaining[1:])!r}; every input is '
         'a --flag (see --help)')
  return remaining


def flag_message(message: str) -> str:
  """`message` with the library's parameter names written as this script's
  flags: `config.KEY` as `--config.KEY` (when the script has --config), and
  a flag's name as `--NAME` where a value follows it (`workdir '/x'`,
  `folds=1`, `split: ...`)."""
  if 'config' in flags.FLAGS:
    message = re.sub(r'(?<![\w./-])config\.(?=[a-z_])', '--config.', message)
  script_flags = flags.FLAGS.get_key_flags_for_module(sys.argv[0])
  names = '|'.join(re.escape(flag.name) for flag in script_flags
                   if flag.name != 'config')
  if names:
    message = re.sub(rf"(?<![\w./'-])({names})(?=[=:]| ['\"/]|$)", r'--\1',
                     message)
  return message


def log_devices() -> None:
  logging.info('JAX %s, process %d of %d, devices: %s', jax.__version__,
               jax.process_index(), jax.process_count(), jax.devices())


class _QuietLibraries(logging.logging.Filter):
  """Keeps orbax's records out of the log: its per-save INFO chatter, and
  its errors with their tracebacks, which checkpoint.py raises again as one
  line (the traceback of MNIST_JAX_TRACEBACK=1 still shows them)."""

  def filter(self, record):
    return '/orbax/' not in record.pathname


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run, with bad flags and bad input printed as one line,
  `error: ...`, and exit code 2."""

  def guarded_main(argv):
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if os.environ.get('MNIST_JAX_TRACEBACK') == '1':
      parallel.maybe_initialize_distributed()
      return main(argv)
    try:
      parallel.maybe_initialize_distributed()
      main(argv)
    except INPUT_ERRORS as e:
      fail(flag_message(str(e) or type(e).__name__))
    except KeyboardInterrupt as e:  # Ctrl-C, or interrupts.Interrupted
      fail(str(e) or 'interrupted',
           128 + getattr(e, 'signal_number', signal.SIGINT))

  app.run(guarded_main, flags_parser=_parse_flags)
