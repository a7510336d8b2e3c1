"""Metrics shared by the offline evaluations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["per_class_metrics"]


def per_class_metrics(labels: Sequence[str], matrix: npt.NDArray[np.int64]) -> dict[str, dict[str, float | int | None]]:
    """Per class of a confusion matrix (rows truth, columns prediction): n, recall, precision; None where a
    ratio is undefined (no such class in the data, or never predicted), so reports stay strict JSON."""
    out: dict[str, dict[str, float | int | None]] = {}
    for i, label in enumerate(labels):
        n_true, n_pred, hit = int(matrix[i].sum()), int(matrix[:, i].sum()), int(matrix[i, i])
        out[label] = {
            "n": n_true,
            "recall": hit / n_true if n_true else None,
            "precision": hit / n_pred if n_pred else None,
        }
    return out
