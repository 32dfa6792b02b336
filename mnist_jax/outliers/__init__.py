"""Which test images are unusual, and are they the ones the model gets wrong?

- `scores`: Isolation Forest scores, the 2x2 statistics of misclassified x
  outlier, and the one-model label-error ranking (maths only);
- `conditional`: forests per class and kNN distances in embedding space
  (is an image unusual for its class?);
- `stratified`: the same question within classes (Mantel-Haenszel, exact
  conditional test, Benjamini-Hochberg);
- `accuracy`: confusion matrix, per-class accuracy, calibration (ECE);
- `features`: the images and the model's embeddings the detectors see;
- `analysis`: the step that reads predictions.csv and writes outliers.csv,
  outliers.json, report.md and the figures;
- `report`, `figures`: report.md and its matplotlib figures.
"""
