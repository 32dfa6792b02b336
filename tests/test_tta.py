"""Test-time augmentation: the views, their average, and the steps that use it."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mnist_jax import config as config_lib
from mnist_jax import metrics_log
from mnist_jax import steps
from mnist_jax import tta

from conftest import synthetic_digits


def _images(n=8):
  images, _ = synthetic_digits(n)
  return steps.to_float(jnp.asarray(images[..., None]))


def test_config_views():
  config = ml_collections.ConfigDict
  assert tta.config_views(config({'tta': False})) == tta.IDENTITY == (tta.View(),)
  # A checkpoint from before the key, read through with_later_keys.
  old = config_lib.with_later_keys(config({'seed': 0}))
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


@pytest.mark.slow  # compiles nine warped views
def test_eval_and_predict_steps_use_the_views(mlp_state):
  state = mlp_state
  images, labels = synthetic_digits(16)
  batch = {'image': jnp.asarray(images[..., None]), 'label': jnp.asarray(labels)}
  variables = steps.inference_variables(state)
  averaged = tta.averaged_logits(lambda x: state.apply_fn(variables, x),
                                 steps.to_float(batch['image']), tta.VIEWS)
  metrics = jax.jit(steps.eval_step, static_argnames='views')(
      state, batch, views=tta.VIEWS)
  assert float(metrics['loss_sum']) == pytest.approx(
      float(steps.cross_entropy(averaged, batch['label']).sum()), rel=1e-5)
  assert int(metrics['correct']) == int(
      jnp.sum(jnp.argmax(averaged, -1) == batch['label']))

  predict = jax.jit(steps.predict_step, static_argnames='views')
  plain = predict(state, batch['image'])
  viewed = predict(state, batch['image'], views=tta.VIEWS)
  np.testing.assert_allclose(viewed['probabilities'], jax.nn.softmax(averaged),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(viewed['probabilities'].sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(viewed['features'], plain['features'])


@pytest.mark.slow
def test_training_logs_the_views_after_the_last_epoch_only(trained_run):
  """And evaluation takes them from the checkpoint's config."""
  summary = trained_run.summary
  records = metrics_log.read_metrics(trained_run.workdir)
  assert [r['epoch'] for r in records] == [1, 2]
  assert 'test_accuracy_tta' not in records[0]
  assert summary['test_loss_tta'] != summary['test_loss']
  with open(os.path.join(trained_run.workdir, 'eval.json')) as f:
    evaluation = json.load(f)
  assert evaluation['tta'] is True
  assert evaluation['accuracy'] == pytest.approx(summary['test_accuracy_tta'],
                                                 abs=1e-9)
  with open(os.path.join(trained_run.workdir, 'predictions.csv')) as f:
    rows = list(csv.DictReader(f))
  label_probabilities = [float(row[f'prob_{row["label"]}']) for row in rows]
  assert summary['test_loss_tta'] == pytest.approx(
      -np.mean(np.log(label_probabilities)), rel=1e-4)
