"""Test-time augmentation: the views, their average, and the steps that use it."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mnist_jax import config as config_checks
from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax import metrics_log
from mnist_jax import steps
from mnist_jax import train
from mnist_jax import tta

from conftest import synthetic_digits, tiny_config, tiny_state_and_batch


def _images(n=8):
  images, _ = synthetic_digits(n)
  return steps.to_float(jnp.asarray(images[..., None]))


def test_config_views():
  config = ml_collections.ConfigDict
  assert tta.config_views(config({'tta': False})) == tta.IDENTITY == (tta.View(),)
  # A checkpoint from before the key, read through config_checks.
  old = config_checks.with_later_keys(config({'seed': 0}))
  assert tta.config_views(old) == tta.IDENTITY
  views = tta.config_views(config({'tta': True}))
  assert len(views) == len(set(views)) == 9 and views[0] == tta.View()


def test_identity_view_is_the_image_and_shift_views_move_it_one_pixel():
  images = _images()
  assert tta.apply_view(images, tta.View()) is images
  down = np.zeros_like(images)
  down[:, 1:] = images[:, :-1]
  np.testing.assert_allclose(tta.apply_view(images, tta.View(shift=(1.0, 0.0))),
                             down, atol=1e-6)
  left = np.zeros_like(images)
  left[:, :, :-1] = images[:, :, 1:]
  np.testing.assert_allclose(tta.apply_view(images, tta.View(shift=(0.0, -1.0))),
                             left, atol=1e-6)


def test_rotation_and_scale_views_keep_the_digit_centred():
  images = _images()
  for view in (tta.View(rotation=6.0), tta.View(scale=1.07)):
    out = np.asarray(tta.apply_view(images, view))
    assert not np.allclose(out, images)
    rows = np.arange(28)[None, :, None, None]
    centroid = lambda x: (x * rows).sum((1, 2, 3)) / x.sum((1, 2, 3))
    np.testing.assert_allclose(centroid(out), centroid(np.asarray(images)),
                               atol=0.5)


def test_one_view_gives_the_logits_and_several_average_log_probabilities():
  weights = jax.random.normal(jax.random.PRNGKey(0), (28 * 28, 10))
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ weights
  images = _images()
  np.testing.assert_array_equal(
      tta.averaged_logits(logits_fn, images, tta.IDENTITY), logits_fn(images))
  averaged = tta.averaged_logits(logits_fn, images, tta.VIEWS)
  expected = np.mean([jax.nn.log_softmax(logits_fn(tta.apply_view(images, v)))
                      for v in tta.VIEWS], axis=0)
  np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(averaged, jax.nn.log_softmax(logits_fn(images)), atol=1e-3)


def test_eval_and_predict_steps_use_the_views(tiny_idx_dir):
  _, state, batch = tiny_state_and_batch(tiny_idx_dir)
  batch['mask'] = jnp.ones(64)
  images = steps.to_float(batch['image'])
  variables = steps.inference_variables(state)
  averaged = tta.averaged_logits(lambda x: state.apply_fn(variables, x), images,
                                 tta.VIEWS)
  metrics = steps.eval_step(state, batch, tta.VIEWS)
  assert float(metrics['loss_sum']) == pytest.approx(
      float(steps.cross_entropy(averaged, batch['label']).sum()), rel=1e-5)
  assert int(metrics['correct']) == int(
      jnp.sum(jnp.argmax(averaged, -1) == batch['label']))

  plain = steps.predict_step(state, batch['image'])
  viewed = steps.predict_step(state, batch['image'], tta.VIEWS)
  np.testing.assert_allclose(viewed['probabilities'], jax.nn.softmax(averaged),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(viewed['probabilities'].sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(viewed['features'], plain['features'])


def test_training_logs_the_views_after_the_last_epoch_only(tiny_idx_dir, tmp_path):
  config = tiny_config(tiny_idx_dir, tta=True)
  summary = train.train_and_evaluate(config, str(tmp_path))
  records = metrics_log.read_metrics(str(tmp_path))
  assert [r['epoch'] for r in records] == [1, 2]
  assert 'test_accuracy_tta' not in records[0]
  assert records[1] == summary
  assert summary['test_loss_tta'] != summary['test_loss']
  # The same figure as predicting the views from the saved checkpoint.
  config, state = evaluate.restore_trained_state(str(tmp_path))
  split = data_lib.load_split(config, 'test')
  probabilities = evaluate.predict(state, split, 64, tta.config_views(config))[
      'probabilities']
  assert summary['test_accuracy_tta'] == pytest.approx(
      np.mean(probabilities.argmax(-1) == split.labels), abs=1e-9)
  label_probabilities = probabilities[np.arange(len(split)), split.labels]
  assert summary['test_loss_tta'] == pytest.approx(
      -np.mean(np.log(label_probabilities)), rel=1e-4)
