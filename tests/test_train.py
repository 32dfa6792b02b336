"""Train and eval steps, data layout, determinism and config checks."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import array as jax_array

from mnist_jax import config as config_lib
from mnist_jax import augment
from mnist_jax import batches
from mnist_jax import checkpoint
from mnist_jax import config as config_checks
from mnist_jax import data as data_lib
from mnist_jax import models
from mnist_jax import optim
from mnist_jax import parallel
from mnist_jax import steps
from mnist_jax import train

from conftest import tiny_config, tiny_state_and_batch


@pytest.mark.parametrize('model', ['mlp', 'cnn', 'convnet', 'convnet_s2d'])
def test_train_steps_lower_the_loss(tiny_idx_dir, model):
  overrides = {'model': model, 'schedule': 'constant', 'learning_rate': 0.003}
  if model == 'convnet_s2d':
    overrides.update(model='convnet', model_kwargs={
        'widths': (16, 64), 'convs_per_stage': (1, 1),
        'downsample': 'space_to_depth'})
  elif model != 'convnet':
    overrides['model_kwargs'] = {}
  _, state, batch = tiny_state_and_batch(tiny_idx_dir, **overrides)
  step = jax.jit(steps.train_step)
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss_sum']) / int(metrics['count']))
  assert int(state.step) == 5
  assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize('optimizer, learning_rate', [
    ('sgd', 0.1), ('momentum', 0.03), ('nesterov', 0.03), ('adamw', 0.003)])
def test_every_optimizer_lowers_the_loss(tiny_idx_dir, optimizer, learning_rate):
  _, state, batch = tiny_state_and_batch(
      tiny_idx_dir, optimizer=optimizer, learning_rate=learning_rate,
      schedule='constant', weight_decay=1e-4)
  step = jax.jit(steps.train_step)
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss_sum']) / int(metrics['count']))
  assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize('schedule, checks', [
    # (step, expected learning rate) from each schedule's definition; 2
    # epochs of 10 steps, peak 0.1, warm-up 0.5 epochs.
    ('constant', [(0, 0.1), (19, 0.1)]),
    ('cosine', [(0, 0.1), (10, 0.05), (20, 0.0)]),
    ('warmup_cosine', [(0, 0.0), (5, 0.1), (20, 0.0)]),
    ('onecycle', [(6, 0.1), (20, 0.0)]),
])
def test_learning_rate_schedules(schedule, checks):
  config = config_lib.default_config()
  config.update(schedule=schedule, learning_rate=0.1, num_epochs=2,
                warmup_epochs=0.5)
  lr = optim.create_learning_rate_schedule(config, steps_per_epoch=10)
  for step, expected in checks:
    assert float(lr(step)) == pytest.approx(expected, abs=1e-6), (step, float(lr(step)))
  if schedule == 'onecycle':  # starts low, peaks at the learning rate
    assert float(lr(0)) < 0.01 and max(float(lr(s)) for s in range(21)) == pytest.approx(0.1)


def test_label_smoothing_changes_the_update_not_the_reported_loss(tiny_idx_dir):
  _, state, batch = tiny_state_and_batch(tiny_idx_dir, schedule='constant')
  plain, plain_metrics = steps.train_step(state, batch)
  smooth, smooth_metrics = steps.train_step(state, batch, label_smoothing=0.1)
  # The logged loss is the plain cross-entropy of the same forward pass.
  assert float(smooth_metrics['loss_sum']) == pytest.approx(
      float(plain_metrics['loss_sum']), rel=1e-6)
  differences = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                             plain.params, smooth.params)
  assert max(jax.tree.leaves(differences)) > 1e-6


def test_batch_norm_statistics_update(tiny_idx_dir):
  _, state, batch = tiny_state_and_batch(tiny_idx_dir)
  new_state, _ = steps.train_step(state, batch)
  before, after = jax.tree.leaves(state.batch_stats), jax.tree.leaves(new_state.batch_stats)
  assert before and any(not np.allclose(a, b) for a, b in zip(before, after))


def test_ema_follows_the_weights_and_is_what_evaluation_uses(tiny_idx_dir):
  _, state, batch = tiny_state_and_batch(tiny_idx_dir, ema_decay=0.99)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, state.ema,
                                   {'params': state.params,
                                    'batch_stats': state.batch_stats}))
  new, _ = steps.train_step(state, batch, ema_decay=0.99)
  # After the first update the decay is ramped to min(0.99, 2 / 11).
  expected = jax.tree.map(lambda old, now: (2 * old + 9 * now) / 11,
                          state.params, new.params)
  assert jax.tree.all(jax.tree.map(
      lambda a, b: jnp.allclose(a, b, atol=1e-6), new.ema['params'], expected))
  assert not jax.tree.all(jax.tree.map(jnp.allclose, new.ema['params'], new.params))

  batch['mask'] = jnp.ones(64)
  logits = new.apply_fn(new.ema, steps.to_float(batch['image']))
  expected_loss = steps.cross_entropy(logits, batch['label']).sum()
  assert float(steps.eval_step(new, batch)['loss_sum']) == pytest.approx(
      float(expected_loss), rel=1e-5)
  assert float(steps.eval_step(new.replace(ema={}), batch)['loss_sum']) != (
      pytest.approx(float(expected_loss), rel=1e-5))


def test_checkpoint_config_from_before_a_key_existed_still_matches(tiny_idx_dir):
  current = tiny_config(tiny_idx_dir)
  old = current.copy_and_resolve_references()
  for key in config_checks.LATER_KEYS:
    del old[key]
  assert checkpoint.config_differences(config_checks.with_later_keys(old),
                                       current) == []


def test_eval_counts_every_example_once(tiny_idx_dir):
  """200 test examples in batches of 64: 4 batches, 56 padded rows masked."""
  config, state, _ = tiny_state_and_batch(tiny_idx_dir)
  split = data_lib.load_split(config, 'test')
  mesh = parallel.create_mesh()
  batches = batches.device_eval_batches(split, 64, parallel.stacked_batches_sharding(mesh))
  assert batches['image'].shape[:2] == (4, 64)
  metrics = train.evaluate(train.make_eval_fn(mesh), state, batches)
  assert metrics['count'] == 200
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          steps.to_float(jnp.asarray(split.images)))
  expected = float(np.mean(np.argmax(logits, -1) == split.labels))
  assert metrics['accuracy'] == pytest.approx(expected, abs=1e-6)


def test_padded_rows():
  rows = batches.padded_rows(5, 4)
  np.testing.assert_array_equal(rows, [[0, 1, 2, 3], [4, 5, 5, 5]])


def test_epoch_rows_depend_on_seed_and_epoch_only():
  a = batches.epoch_rows(100, 32, seed=3, epoch=2)
  assert a.shape == (3, 32) and len(np.unique(a)) == 96
  np.testing.assert_array_equal(a, batches.epoch_rows(100, 32, seed=3, epoch=2))
  assert not np.array_equal(a, batches.epoch_rows(100, 32, seed=3, epoch=3))
  assert not np.array_equal(a, batches.epoch_rows(100, 32, seed=4, epoch=2))


def test_random_shift_moves_content_within_bounds():
  image = jnp.zeros((1, 28, 28, 1)).at[0, 10, 10, 0].set(1.0)
  images = jnp.repeat(image, 64, axis=0)
  shifted = augment.random_shift(images, jax.random.PRNGKey(0), max_shift=2)
  rows, cols = np.nonzero(np.asarray(shifted[..., 0]).sum(0))
  assert shifted.shape == images.shape
  assert rows.min() >= 8 and rows.max() <= 12 and cols.min() >= 8 and cols.max() <= 12
  assert len(set(zip(rows, cols))) > 10  # many different shifts were drawn
  np.testing.assert_allclose(np.asarray(shifted).sum(axis=(1, 2, 3)), 1.0)


def test_elastic_distortion_reaches_the_train_step(tiny_idx_dir):
  _, state, batch = tiny_state_and_batch(tiny_idx_dir)
  step = jax.jit(steps.train_step, static_argnames='augmentation')
  loss = lambda **aug: float(step(
      state, batch, augmentation=augment.Augmentation(**aug))[1]['loss_sum'])
  assert loss(max_rotation=5.0) == loss(max_rotation=5.0)
  assert loss(max_rotation=5.0) != loss(max_rotation=5.0, elastic_alpha=8.0)


def test_augmentation_from_config_reads_every_setting(tiny_idx_dir):
  config = tiny_config(tiny_idx_dir, max_shift=1, max_rotation=5.0,
                       max_scale=0.1, elastic_alpha=8.0, elastic_sigma=3.0)
  assert augment.Augmentation.from_config(config) == augment.Augmentation(
      max_shift=1, max_rotation=5.0, max_scale=0.1, elastic_alpha=8.0,
      elastic_sigma=3.0)


def _read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_training_is_deterministic_and_learns(tiny_idx_dir, tmp_path):
  config = tiny_config(tiny_idx_dir, max_shift=1, max_rotation=5.0,
                       elastic_alpha=8.0)  # the warp path, all of it
  first = train.train_and_evaluate(config, str(tmp_path / 'a'))
  second = train.train_and_evaluate(config, str(tmp_path / 'b'))
  drop_time = lambda records: [{k: v for k, v in r.items() if k != 'elapsed'}
                               for r in records]
  records = _read_metrics(tmp_path / 'a')
  assert drop_time(records) == drop_time(_read_metrics(tmp_path / 'b'))
  assert [r['epoch'] for r in records] == [1, 2]
  assert set(records[0]) == {'epoch', 'train_loss', 'train_accuracy', 'test_loss',
                             'test_accuracy', 'test_examples', 'elapsed'}
  assert first['test_examples'] == 200
  assert first['test_accuracy'] > 0.7  # chance is 0.1
  assert os.listdir(tmp_path / 'a' / 'checkpoints')
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'a'))
  del second


def _host_reads_and_step_compiles(config, workdir, monkeypatch, caplog):
  """Reads of device arrays by the host (explicit, as jax.device_get, or
  implicit, as float(x)), and compilations of the train step, in one run.

  The reads are counted where jax's Array converts itself to numpy
  (jax._src.array.ArrayImpl._value, pinned jax): jax.device_get, float(x),
  int(x) and x.tolist() go through it; np.asarray(x) on CPU did not in a
  check, and the training loop does not use it.
  """
  reads = []
  to_numpy = jax_array.ArrayImpl._value

  def counted(array):
    reads.append(array.shape)
    return to_numpy.fget(array)

  monkeypatch.setattr(jax_array.ArrayImpl, '_value', property(counted))
  caplog.clear()
  with caplog.at_level('WARNING'), jax.log_compiles():
    train.train_and_evaluate(config, str(workdir))
  monkeypatch.undo()
  compiles = [r for r in caplog.records if 'compilation of jit(train_fn)' in r.getMessage()]
  return len(reads), len(compiles)


def test_steps_neither_recompile_nor_sync_with_the_host(tiny_idx_dir, tmp_path,
                                                         monkeypatch, caplog):
  """Twice the steps per epoch (batch 32 against 64, two epochs each, no
  progress lines): the same number of host reads, and the train step
  compiled once per run."""
  runs = {}
  for batch_size in (64, 32):
    config = tiny_config(tiny_idx_dir, batch_size=batch_size, log_every_steps=1000)
    runs[batch_size] = _host_reads_and_step_compiles(
        config, tmp_path / str(batch_size), monkeypatch, caplog)
  (reads_64, compiles_64), (reads_32, compiles_32) = runs[64], runs[32]
  assert reads_64 > 0  # the epoch-end metrics: the count sees reads
  assert reads_32 == reads_64
  assert compiles_64 == compiles_32 == 1


@pytest.mark.parametrize('key, value, message', [
    ('batch_size', 0, '--config.batch_size: must be a positive integer'),
    ('batch_size', -5, '--config.batch_size: must be a positive integer'),
    ('learning_rate', 0.0, '--config.learning_rate: must be positive'),
    ('learning_rate', -0.1, '--config.learning_rate: must be positive'),
    ('num_epochs', 0, '--config.num_epochs: must be a positive integer'),
    ('model', 'vgg', "--config.model: unknown model 'vgg'"),
    ('optimizer', 'lion', "--config.optimizer: unknown optimizer 'lion'"),
    ('schedule', 'step', "--config.schedule: unknown schedule 'step'"),
    ('warmup_epochs', 2.0, r'--config.warmup_epochs: must be in \[0, num_epochs=2\)'),
    ('ema_decay', 1.0, r'--config.ema_decay: must be in \[0, 1\)'),
    ('eval_batch_size', 0, '--config.eval_batch_size: must be a positive integer'),
    ('warmup_epochs', -0.5, r'--config.warmup_epochs: must be in \[0, num_epochs=2\)'),
    ('label_smoothing', 1.0, r'--config.label_smoothing: must be in \[0, 1\)'),
    ('max_shift', 9, '--config.max_shift: must be 0-8 pixels'),
    ('max_rotation', -1.0, '--config.max_rotation: must be 0-45 degrees'),
    ('max_scale', 1.0, r'--config.max_scale: must be in \[0, 1\)'),
    ('elastic_alpha', -1.0, '--config.elastic_alpha: must be 0-100 pixels'),
    ('elastic_sigma', 0.0, '--config.elastic_sigma: must be 0.5-10 pixels'),
    ('checkpoint_every_steps', -1, '--config.checkpoint_every_steps: must be >= 0'),
    ('keep_checkpoints', 0, '--config.keep_checkpoints: must be >= 1'),
    ('log_every_steps', -1, '--config.log_every_steps: must be >= 0'),
    ('seed', -1, r'--config.seed: must be an integer in \[0, 2\*\*32\)'),
    ('seed', 2**32, r'--config.seed: must be an integer in \[0, 2\*\*32\)'),
    ('momentum', 1.0, r'--config.momentum: must be in \[0, 1\)'),
    ('weight_decay', -1e-4, '--config.weight_decay: must be >= 0'),
])
def test_invalid_config_values(tiny_idx_dir, key, value, message):
  config = tiny_config(tiny_idx_dir, **{key: value})
  with pytest.raises((ValueError, TypeError, OSError), match=message):
    config_checks.validate_config(config)


def test_tta_must_be_true_or_false(tiny_idx_dir):
  config = tiny_config(tiny_idx_dir)
  del config['tta']  # as in a config file that builds its own ConfigDict
  config.tta = 'yes'
  with pytest.raises((ValueError, TypeError, OSError), match="config.tta: must be true or false, got 'yes'"):
    config_checks.validate_config(config)
