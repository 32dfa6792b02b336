"""Which test images are unusual, and are they the ones the model gets wrong?

- `scores`: Isolation Forest scores and the statistics of misclassified x
  outlier (maths only: arrays in, arrays and dicts out);
- `features`: the images and the model's embeddings the forests see;
- `analysis`: the step that reads predictions.csv and writes outliers.csv,
  outliers.json, report.md and the figures;
- `report`, `figures`: report.md and its matplotlib figures.
"""
