"""Edge cases of input handling found in review: each is a UserError."""

import math

import pytest

from mnist_jax import config as config_lib
from mnist_jax import config as config_checks
from mnist_jax import io_utils
from mnist_jax import metrics_log
from mnist_jax import optim
from mnist_jax.outliers import analysis as outlier_analysis
from mnist_jax import parallel
from mnist_jax import train


def test_warmup_cosine_with_one_step_per_epoch():
  """Inference rebuilds the optimizer with one step per epoch."""
  config = config_lib.default_config()
  config.schedule, config.num_epochs, config.warmup_epochs = 'warmup_cosine', 1, 0.5
  schedule = optim.create_learning_rate_schedule(config, steps_per_epoch=1)
  assert all(math.isfinite(float(schedule(step))) for step in range(3))


def test_config_without_a_key_is_named():
  config = config_lib.default_config()
  del config['label_smoothing']
  with pytest.raises((ValueError, TypeError, OSError), match='config.label_smoothing: missing'):
    config_checks.validate_config(config)


@pytest.mark.parametrize('variables, message', [
    ({'JAX_NUM_PROCESSES': '2'}, 'JAX_PROCESS_ID'),
    ({'JAX_NUM_PROCESSES': 'two', 'JAX_PROCESS_ID': '0'}, 'JAX_NUM_PROCESSES'),
])
def test_incomplete_distributed_environment(monkeypatch, variables, message):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'localhost:1')
  monkeypatch.delenv('JAX_PROCESS_ID', raising=False)
  for name, value in variables.items():
    monkeypatch.setenv(name, value)
  with pytest.raises((ValueError, TypeError, OSError), match=message):
    parallel.maybe_initialize_distributed()


def test_corrupt_metrics_line(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"epoch": 1}\n{"epoch": 2, \n')
  with pytest.raises((ValueError, TypeError, OSError), match='metrics.jsonl: line 2 is not JSON'):
    metrics_log.read_metrics(str(tmp_path))


@pytest.mark.parametrize('line', ['{}', '[1, 2]', '{"epoch": "one"}',
                                  '{"epoch": 2, "elapsed": null}'])
def test_metrics_line_that_is_not_an_epoch_record(tmp_path, line):
  (tmp_path / 'metrics.jsonl').write_text('{"epoch": 1}\n' + line + '\n')
  with pytest.raises((ValueError, TypeError, OSError), match="metrics.jsonl: line 2 is not an epoch's record"):
    metrics_log.read_metrics(str(tmp_path))


def test_output_path_that_is_a_directory(tmp_path):
  with pytest.raises((ValueError, TypeError, OSError), match='--out .* is a directory'):
    io_utils.ensure_writable_file_path(str(tmp_path), '--out')
  assert io_utils.ensure_writable_file_path(str(tmp_path / 'new' / 'f.json'), '--out')


def test_outlier_seed_out_of_range(tmp_path):
  with pytest.raises((ValueError, TypeError, OSError), match=r'--seed: must be in \[0, 2\*\*32\)'):
    outlier_analysis.run_outlier_analysis(str(tmp_path), seed=-1)


def test_bad_model_kwargs_fail_before_the_workdir_is_made(tmp_path):
  config = config_lib.default_config()
  config.model_kwargs = {'widths': (8, 16, 32), 'convs_per_stage': (1, 2)}
  workdir = tmp_path / 'run'
  with pytest.raises((ValueError, TypeError, OSError), match='convs_per_stage: .* 2 entries for 3 widths'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
