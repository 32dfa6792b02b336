"""The label-error finder: folds, confident-learning scores, bad input, and a
tiny end-to-end run."""

import csv
import json
import os

import numpy as np
import pytest

from mnist_jax import data as data_lib
from mnist_jax import evaluate
from mnist_jax.data import Split
from mnist_jax.label_errors import finder
from mnist_jax.label_errors import folds
from mnist_jax.label_errors import ranking

from conftest import (REPO_ROOT, run_in_process, snapshot, tiny_config,
                      write_idx_folder)

# --------------------------------------------------------------------- folds


def test_fold_ids_are_stratified_and_seeded():
  labels = np.repeat(np.arange(10), [30, 31, 32, 33, 34, 35, 36, 37, 38, 39])
  ids = folds.fold_ids(labels, 5, seed=3)
  counts = np.array([np.bincount(labels[ids == k], minlength=10)
                     for k in range(5)])
  assert (counts.max(0) - counts.min(0) <= 1).all()  # every class spread evenly
  np.testing.assert_array_equal(ids, folds.fold_ids(labels, 5, seed=3))
  assert (ids != folds.fold_ids(labels, 5, seed=4)).any()
  assert folds.max_folds(labels) == 30


@pytest.mark.parametrize('count', [1, 0, 31])
def test_fold_count_out_of_range(count):
  labels = np.repeat(np.arange(10), 30)
  with pytest.raises(ValueError, match=f'folds={count}: must be 2 to 30'):
    folds.fold_ids(labels, count, seed=0)


def _recording_folds(monkeypatch):
  """Replaces training and prediction: each fake model remembers the image
  ids it trained on; predictions are one-hot on (id % 10) and recorded."""
  trained_on, predicted = [], []

  def fake_fit(config, split, seed):
    trained_on.append(set(split.index.tolist()))
    return len(trained_on) - 1

  def fake_predict(state, split, batch_size, views):
    predicted.append((state, set(split.index.tolist())))
    return {'probabilities': np.eye(10)[split.index % 10]}

  monkeypatch.setattr(folds, 'fit', fake_fit)
  monkeypatch.setattr(evaluate, 'predict', fake_predict)
  return trained_on, predicted


def _split(index):
  index = np.asarray(index)
  return Split(images=np.zeros((len(index), 28, 28, 1), np.uint8),
               labels=(index % 10).astype(np.int32), index=index)


@pytest.mark.parametrize('with_train', [False, True])
def test_no_image_is_scored_by_a_model_that_trained_on_it(monkeypatch, with_train):
  """split=train: folds of the training images; split=test: folds of the
  test images, each model also trained on every training image."""
  trained_on, predicted = _recording_folds(monkeypatch)
  scored = _split(np.arange(1000, 1100))
  train = _split(np.arange(300)) if with_train else None
  ids = folds.fold_ids(scored.labels, 4, seed=0)
  probabilities, _ = folds.out_of_sample_probabilities(
      tiny_config(''), scored, ids, train)
  assert len(trained_on) == len(predicted) == 4
  everything = set(scored.index.tolist()) | (
      set(train.index.tolist()) if with_train else set())
  seen = set()
  for model, images in predicted:
    assert not images & trained_on[model]
    assert trained_on[model] | images == everything
    assert not images & seen
    seen |= images
  assert seen == set(scored.index.tolist())
  # Each row got the probabilities predicted for its own image.
  np.testing.assert_array_equal(probabilities.argmax(-1), scored.index % 10)


# -------------------------------------------------------------------- scores

# Three classes, six images: image 1 (labelled 0) looks like a 1, image 5
# (labelled 2) like a 0, image 3 is ambiguous.
LABELS = np.array([0, 0, 1, 1, 2, 2])
PROBABILITIES = np.array([[0.8, 0.1, 0.1],
                          [0.1, 0.8, 0.1],
                          [0.1, 0.9, 0.0],
                          [0.3, 0.35, 0.35],
                          [0.1, 0.1, 0.8],
                          [0.6, 0.0, 0.4]])


def test_scores_by_hand():
  np.testing.assert_allclose(
      ranking.self_confidence(LABELS, PROBABILITIES),
      [0.8, 0.1, 0.9, 0.35, 0.8, 0.4])
  # (p_label - largest other + 1) / 2
  np.testing.assert_allclose(
      ranking.normalized_margin(LABELS, PROBABILITIES),
      [0.85, 0.15, 0.9, 0.5, 0.85, 0.4])
  # t_j = mean p_j over the images labelled j.
  np.testing.assert_allclose(ranking.per_class_thresholds(LABELS, PROBABILITIES),
                             [0.45, 0.625, 0.6])


def test_confident_joint_by_hand():
  # Above threshold: image 0 class 0; 1 class 1; 2 class 1; 3 none;
  # 4 class 2; 5 class 0 (0.6 >= 0.45, 0.4 < 0.6).
  np.testing.assert_array_equal(
      ranking.confident_classes(LABELS, PROBABILITIES), [0, 1, 1, -1, 2, 0])
  joint = ranking.confident_joint(LABELS, PROBABILITIES)
  np.testing.assert_array_equal(joint, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
  # Rows scaled to the label counts (2 each): row 1 counted one image.
  np.testing.assert_allclose(ranking.calibrated_joint(joint, LABELS),
                             [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
  # One error labelled 0 that is a 1 (largest p1 - p0: image 1), one
  # labelled 2 that is a 0 (largest p0 - p2: image 5).
  np.testing.assert_array_equal(
      ranking.confident_joint_issues(LABELS, PROBABILITIES),
      [False, True, False, False, False, True])


@pytest.mark.parametrize('method, expected_rank', [
    ('self_confidence', [4, 1, 6, 2, 5, 3]),
    ('normalized_margin', [4, 1, 6, 3, 5, 2]),
    ('confident_joint', [4, 1, 6, 3, 5, 2]),  # flagged 1 and 5 first
])
def test_ranks_by_hand(method, expected_rank):
  score, rank = ranking.label_quality(LABELS, PROBABILITIES, method)
  np.testing.assert_array_equal(rank, expected_rank)
  assert score.shape == (6,)


def test_flip_labels():
  labels = np.repeat(np.arange(10), 100)
  noisy, flipped = ranking.flip_labels(labels, 200, seed=1)
  assert len(flipped) == len(set(flipped.tolist())) == 200
  changed = np.flatnonzero(noisy != labels)
  np.testing.assert_array_equal(changed, flipped)
  again, flipped_again = ranking.flip_labels(labels, 200, seed=1)
  np.testing.assert_array_equal(again, noisy)
  # Every other class is drawn: the shift (new - old) mod 10 covers 1..9.
  assert set(((noisy - labels) % 10)[flipped].tolist()) == set(range(1, 10))
  with pytest.raises(ValueError, match='flip_labels=1001'):
    ranking.flip_labels(labels, 1001, seed=0)


def test_retrieval_by_hand():
  rank = np.array([1, 2, 3, 4, 5, 6])
  is_error = np.array([True, False, True, False, False, True])
  result = ranking.retrieval(rank, is_error, (2, 3))
  assert result['at'] == [
      {'n': 2, 'found': 1, 'precision': 0.5, 'recall': 1 / 3},
      {'n': 3, 'found': 2, 'precision': 2 / 3, 'recall': 2 / 3}]
  # Precision at each error found: 1, 2/3, 3/6.
  assert result['average_precision'] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)


# ---------------------------------------------------------------- bad input


@pytest.fixture
def idx_dir(tmp_path):
  return write_idx_folder(tmp_path / 'idx', num_train=256, num_test=100)


def _flags(workdir, data_dir, *extra):
  """A small fast-compiling model: the 784-128-10 perceptron, one epoch."""
  return (f'--workdir={workdir}', f'--config={REPO_ROOT}/configs/mlp.py',
          f'--config.data_dir={data_dir}', '--config.batch_size=64',
          '--config.num_epochs=1', *extra)


@pytest.mark.parametrize('extra, fragment', [
    (('--split=test', '--folds=1'), '--folds=1: must be 2 to '),
    (('--split=test', '--folds=30'), '--folds=30: must be 2 to '),
    (('--split=val',), '--split'),
    (('--split=train', '--flip_labels=-1'), '--flip_labels=-1: must be >= 0'),
    (('--split=train', '--flip_labels=257'), '--flip_labels=257: must be 0 to 256'),
    (('--split=train', '--config.batch_size=256'),
     '--config.batch_size=256 is larger than the '),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, idx_dir, extra,
                                                   fragment):
  workdir = tmp_path / 'work'
  error, _ = run_in_process('label_errors.py', *_flags(workdir, idx_dir, *extra))
  assert error is not None and '\n' not in error
  assert fragment in error, error
  assert not workdir.exists()


def test_workdir_of_another_dataset_is_refused(tmp_path, idx_dir):
  workdir = tmp_path / 'work'
  workdir.mkdir()
  (workdir / 'eval.json').write_text(json.dumps({'dataset': 'fashion_mnist'}))
  before = snapshot(workdir)
  error, _ = run_in_process('label_errors.py',
                            *_flags(workdir, idx_dir, '--split=test'))
  assert error == (f"--workdir '{workdir}' holds a run on fashion_mnist "
                   '(eval.json), not mnist; use another workdir for mnist')
  assert snapshot(workdir) == before


# ------------------------------------------------------------- end to end


@pytest.mark.slow
def test_end_to_end_on_tiny_data(tmp_path, idx_dir):
  """Two folds of a tiny model on the test split, 10 labels flipped."""
  workdir = tmp_path / 'work'
  error, stdout = run_in_process(
      'label_errors.py', *_flags(workdir, idx_dir, '--split=test', '--folds=2',
                                 '--flip_labels=10'))
  assert error is None, error
  assert 'flipped labels in the top 10' in stdout
  names = finder.output_names('test')
  assert set(os.listdir(workdir)) - {'.lock'} == set(names)
  with open(workdir / names[0], newline='') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == finder.COLUMNS
  assert [int(r['rank']) for r in rows] == list(range(1, 101))
  scores = [float(r['score']) for r in rows]
  assert scores == sorted(scores)  # self-confidence: rank 1 = lowest
  test = data_lib.load_idx_split(idx_dir, 'test')
  summary = json.loads((workdir / names[1]).read_text())
  flipped = summary['synthetic_noise']['flipped_index']
  assert len(flipped) == 10
  labels = {int(r['index']): int(r['label']) for r in rows}
  assert sorted(labels) == list(range(100))
  changed = [i for i in range(100) if labels[i] != test.labels[i]]
  assert changed == flipped
  for row in rows:
    assert float(row['p_label']) == pytest.approx(float(row['score']), abs=2e-6)
    assert float(row['p_suggested']) >= float(row['p_label'])
  assert summary['method'] == 'self_confidence'
  assert summary['folds'] == 2 and summary['split'] == 'test'
  assert summary['counts']['num_images'] == 100
  assert 0 <= summary['out_of_sample_accuracy'] <= 1
  assert set(summary['synthetic_noise']['retrieval']) == set(ranking.METHODS)
  assert (workdir / names[2]).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
