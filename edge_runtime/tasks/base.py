"""The contract between the pipeline and a task module.

Each `edge_runtime/tasks/<name>.py` exports:

- `<Name>Config(StrictModel)` with `kind: Literal["<name>"]` and the task's options (the pipeline's `task:`);
- `<Name>Task(config, runner)` implementing `Task` below: `process` takes a micro-batch of inputs (vibration:
  `Window`s at the model's rate; vision: `Frame`s) and returns one `Result` per input, in order (the pipeline
  stamps `pipeline`, `latency_ns` and `model`; the outbox `seq`). It runs in a worker thread: do all
  numpy/OpenCV work and one batched `runner.run` there.

Tasks register in `edge_runtime/tasks/__init__.py` (`TASKS`); their offline evaluation lives in the tooling
(`edge_runtime/tools/evaluate/<name>.py`), not on the service's import path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from adapters.base import Result, StrictModel
from adapters.supervise import BurstLog

__all__ = ["InvalidInputs", "Task", "TaskConfigBase", "Window"]


@dataclass(frozen=True, slots=True)
class Window:
    """A window of one waveform stream, already resampled to the model's rate."""

    stream: str
    t_ns: int  # time of the window's first sample
    samples: npt.NDArray[np.float32]  # shape (window,)
    source_rate_hz: float


class TaskConfigBase(StrictModel):
    """A pipeline's `task:`; each task narrows `kind` to its model's name."""

    kind: str


class Task(Protocol):
    name: str

    def process(self, items: Sequence[Any]) -> list[Result]: ...


class InvalidInputs:
    """Counts malformed inputs (wrong shape, NaN) in `stats[key]` and warns once per burst (`BurstLog`)."""

    def __init__(self, stats: Counter[str], key: str, model: str) -> None:
        self.model = model
        self._log = BurstLog(key, stats, key)

    def record(self, n_bad: int, n: int, detail: str = "") -> None:
        self._log(n_bad, model=self.model, of=n, detail=detail.strip() or "-")
