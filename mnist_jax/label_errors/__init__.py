"""Which labels are wrong: confident learning on out-of-sample probabilities.

- `folds`: K-fold cross-validation, every image predicted by a model that
  never trained on it (models trained in memory, no files);
- `ranking`: self-confidence, normalized margin and the confident joint
  (maths only: labels and probabilities in, scores and ranks out);
- `finder`: the step behind scripts/label_errors.py, which writes
  label_errors_{split}.csv, .json and .png.
"""
