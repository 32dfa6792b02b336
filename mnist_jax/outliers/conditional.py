"""Is a test image unusual *for its class*? Class-conditional outlier scores.

A pooled pixel forest mostly measures ink (a 0 has more of it than a 1), so
its outliers are largely a few classes, and crossing them with the model's
errors mixes "misclassified" with "which class". Two detectors that ask the
question within a class instead:

- a forest per class, fitted on the training images of that class; each
  test image is scored by the forest of its labelled class and, separately,
  of its predicted class. With a numeric `contamination`, each forest's
  threshold is its own training class's `contamination` quantile, so the
  chance rate is the same in every class ('auto': sklearn's fixed offset);
- k-nearest-neighbour distance in the model's embedding space, as cleanlab's
  Datalab scores outliers from features: the mean cosine distance to the k
  nearest other images of the set (or of a reference set, such as the
  training images), reported as Datalab's score exp(-distance / median
  distance). The threshold is the `contamination` quantile of the reference
  images' own distances, not Datalab's IQR rule, so that every detector here
  has the same 5% chance rate.

Every detector's score follows the Isolation Forest's sign: lower = more
anomalous.
"""

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

from mnist_jax.data import NUM_CLASSES

DEFAULT_NEIGHBORS = 10  # Datalab's default k
KNN_METRIC = 'cosine'  # Datalab's metric for features of more than 3 dims
# Reference images whose own distances set the kNN threshold: a quantile of
# a 5,000-image sample, not of all 60,000 training images (which would cost
# more than scoring the test set).
THRESHOLD_SAMPLE = 5000


def class_forests(features: np.ndarray, labels: np.ndarray, *,
                  n_estimators: int, max_samples: int,
                  contamination: str | float, seed: int
                  ) -> list[IsolationForest | None]:
  """One forest per class k, fitted on the `features` [N, D] labelled k
  (None for a class with no image)."""
  forests = []
  for k in range(NUM_CLASSES):
    members = features[labels == k]
    forests.append(None if not len(members) else IsolationForest(
        n_estimators=n_estimators, max_samples=min(max_samples, len(members)),
        contamination=contamination, random_state=seed).fit(members))
  return forests


def class_forest_scores(forests: list[IsolationForest | None],
                        features: np.ndarray,
                        classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Scores [N] and is_outlier [N]: image i by the forest of `classes[i]`."""
  scores = np.zeros(len(features))
  for k in np.unique(classes):
    if forests[k] is None:
      raise ValueError(f'no training image of class {k} to fit its forest on')
    members = classes == k
    scores[members] = forests[k].decision_function(features[members])
  return scores, scores < 0


def mean_neighbor_distances(index: NearestNeighbors, queries: np.ndarray | None,
                            k: int) -> np.ndarray:
  """Mean distance [N] from each query to its k nearest indexed points;
  `queries` None: each indexed point to its k nearest others."""
  distances, _ = index.kneighbors(queries, n_neighbors=k)
  return distances.mean(-1)


def knn_scores(features: np.ndarray, reference: np.ndarray | None = None, *,
               k: int = DEFAULT_NEIGHBORS, contamination: float,
               seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
  """Datalab-style kNN scores [N] and is_outlier [N] of `features`, and the
  distances that scale and cut them.

  Distances are to the `reference` points, or (None, as Datalab does) to the
  other images of `features` themselves. The scale and the cut come from
  the reference's own distances (a seeded THRESHOLD_SAMPLE of them).
  """
  own = reference is None
  reference = features if own else reference
  k = min(k, len(reference) - 1)
  index = NearestNeighbors(n_neighbors=k, metric=KNN_METRIC,
                           algorithm='brute').fit(reference)
  if own:
    distances = reference_distances = mean_neighbor_distances(index, None, k)
  else:
    distances = mean_neighbor_distances(index, features, k)
    sample = np.random.default_rng(seed).permutation(len(reference))
    # kneighbors of indexed points: k + 1, the first being the point itself
    # (or an exact duplicate, at the same distance 0).
    distances_to_others, _ = index.kneighbors(
        reference[sample[:THRESHOLD_SAMPLE]], n_neighbors=k + 1)
    reference_distances = distances_to_others[:, 1:].mean(-1)
  scale = max(float(np.median(reference_distances)), np.finfo(np.float64).eps)
  cutoff = float(np.quantile(reference_distances, 1 - contamination))
  return np.exp(-distances / scale), distances > cutoff, {
      'k': k, 'median_reference_distance': scale, 'outlier_distance': cutoff}
