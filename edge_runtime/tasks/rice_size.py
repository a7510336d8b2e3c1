"""Grain size as evidence beside the crop classifier, and a running check that the camera scale it needs is right.

The crops are scale-normalised (the network never sees how big a grain is, so it works at any camera distance),
yet size tells the varieties apart well on its own (Ipsala is broad, Karacadag short, Basmati long and thin): the
manifest's `preprocessing.size_prior` holds, per variety, the mean and spread of log length, log width and log
area in data-set pixels, and the variety probabilities are weighed with that likelihood (naive Bayes, tempered by
`weight`). It needs `scale_px_per_dataset_px` to be right within a few per cent, so `ScaleCheck` follows the
median length of the grains the network calls the declared variety (most of a lot): the prior applies once the
grains confirm the configured scale, and is suspended, with a warning, while they disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import EdgeRuntimeError

__all__ = ["FEATURES", "ScaleCheck", "SizePrior", "size_features"]

FEATURES = ("log_length", "log_width", "log_area")
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def size_features(length_px: npt.ArrayLike, width_px: npt.ArrayLike, area_px: npt.ArrayLike, scale: float = 1.0) -> F64:
    """(N, 3) log length, log width, log area of grains in data-set pixels (camera pixels / `scale`)."""
    length = np.maximum(np.asarray(length_px, dtype=np.float64) / scale, 1.0)
    width = np.maximum(np.asarray(width_px, dtype=np.float64) / scale, 1.0)
    area = np.maximum(np.asarray(area_px, dtype=np.float64) / (scale * scale), 1.0)
    out: F64 = np.log(np.stack([length, width, area], axis=1))
    return out


@dataclass(frozen=True)
class SizePrior:
    """Per-variety Gaussians over `FEATURES` (rows in label order) and the weight of their log-likelihood."""

    mean: F64  # (K, 3)
    std: F64  # (K, 3)
    weight: float

    @classmethod
    def from_manifest(cls, preprocessing: Mapping[str, Any], labels: Sequence[str], where: str) -> SizePrior | None:
        """The manifest's `preprocessing.size_prior`, or None when the model ships without one."""
        spec = preprocessing.get("size_prior")
        if spec is None:
            return None
        try:
            if list(spec["features"]) != list(FEATURES):
                raise ValueError(f"features must be {list(FEATURES)}")
            rows: dict[str, list[list[float]]] = {"mean": [], "std": []}
            for key, table in rows.items():
                for label in labels:
                    if label not in spec[key]:
                        raise ValueError(f"{key} has no entry for label {label!r}")
                    row = [float(x) for x in spec[key][label]]
                    if len(row) != len(FEATURES):
                        raise ValueError(f"{key}.{label} needs three numbers ({', '.join(FEATURES)})")
                    table.append(row)
            mean = np.array(rows["mean"], dtype=np.float64)
            std = np.array(rows["std"], dtype=np.float64)
            weight = float(spec["weight"])
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise ValueError("mean must be finite and std finite and > 0")
            if not 0.0 <= weight <= 10.0:
                raise ValueError(f"weight {weight} is outside [0, 10]")
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise EdgeRuntimeError(f"{where}: preprocessing.size_prior: {problem}") from exc
        return cls(mean=mean, std=std, weight=weight)

    def log_likelihood(self, features: F64) -> F64:
        """(N, K) log density of each grain under each variety's Gaussian (diagonal)."""
        z = (features[:, None, :] - self.mean[None]) / self.std[None]
        out: F64 = -0.5 * (z * z).sum(axis=2) - np.log(self.std).sum(axis=1)[None]
        return out

    def weigh(self, probs: F32, features: F64) -> F32:
        """The network's probabilities times the size likelihood ** weight, renormalised; a grain without finite
        sizes keeps the network's probabilities."""
        if len(probs) == 0 or self.weight == 0.0:
            return probs
        sized = np.isfinite(features).all(axis=1)
        if not sized.all():
            out = probs.copy()
            out[sized] = self.weigh(probs[sized], features[sized])
            return out
        score = np.log(np.maximum(probs.astype(np.float64), 1e-6)) + self.weight * self.log_likelihood(features)
        score -= score.max(axis=1, keepdims=True)
        p = np.exp(score)
        weighed: F32 = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        return weighed


class ScaleCheck:
    """Compares the configured camera scale with the one the grains show: the median log length of the last
    `window` grains the network gives the declared variety, against that variety's median in the training data.

    `ok` once `min_grains` are seen and the ratio is within `confirm` (5 % moves size decisions; a lot is mostly its
    declared variety, and the median of 100 grains is within about 1 %); once ok, it stays ok until the ratio is
    off by more than `revoke`, so a scale near the edge does not switch the prior on and off frame by frame. Until
    it is ok, and after it is revoked, the task leaves the prior out rather than judge grains at a scale nobody has
    confirmed.
    """

    def __init__(
        self,
        expected_log_length: float,
        *,
        confirm: float = 0.05,
        revoke: float = 0.08,
        window: int = 2000,
        min_grains: int = 100,
    ) -> None:
        self.expected = expected_log_length
        self.confirm, self.revoke = math.log1p(confirm), math.log1p(revoke)
        self.min_grains = min_grains
        self._recent = np.empty(window, dtype=np.float64)  # a ring of the last `window` log lengths
        self._seen = 0
        self.ratio: float | None = None  # measured / configured scale, once min_grains are seen
        self.ok = False

    def update(self, log_lengths: npt.ArrayLike) -> None:
        values = np.asarray(log_lengths, dtype=np.float64).reshape(-1)
        values = values[np.isfinite(values)][-len(self._recent) :]
        self._recent[(self._seen + np.arange(len(values))) % len(self._recent)] = values
        self._seen += len(values)
        if self._seen < self.min_grains:
            return
        window = self._recent[: min(self._seen, len(self._recent))]
        # np.median's value (the mean of the two middle values for an even count) from one partition, without its
        # checks: this runs once per frame
        half = len(window) // 2
        if len(window) % 2:
            median = float(np.partition(window, half)[half])
        else:
            middle = np.partition(window, (half - 1, half))
            median = 0.5 * (float(middle[half - 1]) + float(middle[half]))
        self.ratio = math.exp(median - self.expected)
        off = abs(math.log(self.ratio))
        self.ok = off <= (self.revoke if self.ok else self.confirm)
