"""The contract between the pipeline and a task module.

Each `edge_runtime/tasks/<name>.py` exports:

- `<Name>Config(StrictModel)` with `kind: Literal["<name>"]` and the task's options (the pipeline's `task:`);
- `<Name>Task(config, runner)` implementing `Task` below: `process` takes a micro-batch of inputs (vibration:
  `Window`s at the model's rate; vision: `Frame`s) and returns one result-fields dict per input, in order.
  It runs in a worker thread: do all numpy/OpenCV work and one batched `runner.run` there;
- `evaluate(data_dir, *, variant="fp32", **options) -> dict` used by `edge-runtime evaluate`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["InvalidInputs", "Task", "Window", "per_class_metrics"]

log = logging.getLogger("edge_runtime.tasks")


@dataclass(frozen=True, slots=True)
class Window:
    """A window of one waveform stream, already resampled to the model's rate."""

    stream: str
    t_ns: int  # time of the window's first sample
    samples: npt.NDArray[np.float32]  # shape (window,)
    source_rate_hz: float


class Task(Protocol):
    name: str

    def process(self, items: Sequence[Any]) -> list[dict[str, Any]]: ...


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


class InvalidInputs:
    """Counts malformed inputs (wrong shape, NaN) in `stats[key]` and logs once per burst: a feed that sends
    garbage for an hour writes one line, and a line again after it has been clean."""

    def __init__(self, stats: Counter[str], key: str, model: str) -> None:
        self.stats, self.key, self.model = stats, key, model
        self._burst = False

    def record(self, n_bad: int, n: int, detail: str = "") -> None:
        if not n_bad:
            self._burst = False
            return
        self.stats[self.key] += n_bad
        if not self._burst:
            log.warning("event=%s model=%s count=%d of=%d%s", self.key, self.model, n_bad, n, detail)
        self._burst = True
