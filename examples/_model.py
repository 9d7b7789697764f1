"""A tiny nearest-centroid iris classifier: enough of a model to show pre-processing, inference and post-processing."""

from __future__ import annotations

import math
import time

CLASSES = ("setosa", "versicolor", "virginica")
# Per-class mean of sepal length, sepal width, petal length, petal width (cm).
CENTROIDS = (
    (5.01, 3.43, 1.46, 0.25),
    (5.94, 2.77, 4.26, 1.33),
    (6.59, 2.97, 5.55, 2.03),
)
SCALE = (0.83, 0.44, 1.77, 0.76)


def featurize(rows: list[list[float]]) -> list[tuple[float, ...]]:
    """Validate and standardise the raw feature rows."""
    out = []
    for row in rows:
        if len(row) != 4:
            raise ValueError(f"expected 4 features, got {len(row)}")
        out.append(tuple(float(x) / s for x, s in zip(row, SCALE, strict=True)))
    return out


def predict(features: list[tuple[float, ...]], delay: float = 0.0) -> list[list[float]]:
    """Softmax over negative distances to each class centroid."""
    if delay:
        time.sleep(delay)
    scaled = [tuple(c / s for c, s in zip(centroid, SCALE, strict=True)) for centroid in CENTROIDS]
    result = []
    for row in features:
        logits = [-math.dist(row, centroid) for centroid in scaled]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        result.append([e / total for e in exps])
    return result


def to_labels(probabilities: list[list[float]]) -> list[dict[str, object]]:
    """Pick the most likely class of each row."""
    return [
        {"label": CLASSES[max(range(3), key=row.__getitem__)], "confidence": round(max(row), 4)}
        for row in probabilities
    ]
