"""The run configuration (config.py) and the config files built on it.

Every bad value's one-line message is in test_cli's table."""

import ml_collections
import pytest

from configs import best, cnn, default, fast, mlp
from mnist_jax import config as config_lib

CONFIG_FILES = {
    'default.py': default.get_config, 'fast.py': fast.get_config,
    'best.py': best.get_config, 'best.py:s2d': lambda: best.get_config('s2d'),
    'best.py:wide': lambda: best.get_config('wide'), 'cnn.py': cnn.get_config,
    'mlp.py': mlp.get_config,
}


@pytest.mark.parametrize('name', sorted(CONFIG_FILES))
def test_config_files_are_the_defaults_with_a_few_keys_changed(name):
  config, defaults = CONFIG_FILES[name](), config_lib.default_config()
  config_lib.validate_config(config)
  assert config.keys() == defaults.keys()
  changed = [key for key in defaults if config[key] != defaults[key]]
  assert len(changed) <= 10, changed


def test_default_py_is_default_config():
  assert default.get_config() == config_lib.default_config()


def test_best_variants_change_the_network_and_epochs_only():
  base, s2d = best.get_config(), best.get_config('s2d')
  changed = {key for key in base if base[key] != s2d[key]}
  assert changed == {'model_kwargs', 'num_epochs'}
  assert s2d.model_kwargs.downsample == 'space_to_depth'
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    best.get_config('nope')


def test_a_bad_value_is_a_value_error_naming_the_key():
  config = config_lib.default_config()
  config.batch_size = 0
  with pytest.raises(ValueError, match=r'^config\.batch_size: '):
    config_lib.validate_config(config)


def test_with_later_keys_fills_in_what_an_old_config_lacks():
  old = config_lib.default_config()
  for key in config_lib.LATER_KEYS:
    del old[key]
  old.seed = 3
  completed = config_lib.with_later_keys(old)
  for key, off in config_lib.LATER_KEYS.items():
    assert completed[key] == off and key not in old
  assert completed.seed == 3
  assert completed.keys() == config_lib.default_config().keys()
  config_lib.validate_config(completed)
  current = config_lib.default_config()
  current.update(ema_decay=0.9)
  assert config_lib.with_later_keys(current).ema_decay == 0.9  # kept
  assert isinstance(completed, ml_collections.ConfigDict)
