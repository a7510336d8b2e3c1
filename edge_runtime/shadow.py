"""A candidate model run in shadow beside the running one before it takes over.

A new model version (files changed in its folder, or another `model:` after a reload) has passed its start-up
checks (sha256, tensor signature, a warm-up run), but a model can pass them and still be wrong for the line: labels
in another order, another input scale, a half-trained file. So the candidate first sees the same live inputs as
the running model, after the same compensation, and only its decisions are compared; its results go nowhere. When
it has seen `target` inputs and agreed on at least `min_agreement` of them, the pipeline swaps it in between two
batches (no input is dropped or processed twice). Any error, a wrong result count or too little agreement keeps
the running model, and the reason is logged.

The candidate runs after the running model's results are stored, so shadowing costs throughput (each input is
inferred twice) but never the latency of a result. A task's per-stream state (a vibration baseline) starts empty in
the candidate, so the first windows of a stateful task may disagree; `target` should cover its warm-up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.base import Result
from edge_runtime.tasks.base import Task

__all__ = ["Shadow", "Verdict", "agree"]

log = logging.getLogger("edge_runtime.shadow")


def agree(running: Result, candidate: Result) -> bool:
    """What the line acts on: the decision (accept/reject, eject, alarm) and the class behind it."""
    return running.decision == candidate.decision and running.label == candidate.label


@dataclass(frozen=True, slots=True)
class Verdict:
    swap: bool
    why: str


@dataclass(slots=True)
class Shadow:
    """Comparison state of one candidate in one pipeline. `compare` runs on an inference worker, one batch at a
    time (the pipeline's loop awaits each), so the counters need no lock."""

    task: Task
    ident: str
    target: int
    min_agreement: float
    seen: int = 0
    agreed: int = 0
    failure: str | None = None
    examples: list[str] = field(default_factory=list)  # the first disagreements, for the log

    def compare(self, items: Sequence[Any], running: Sequence[Result]) -> None:
        if self.failure is not None or self.seen >= self.target:
            return
        try:
            got = self.task.process(items)
        except Exception as exc:  # any failure of the candidate is a verdict, never a stop of the line
            self.failure = f"the candidate raised {exc!r} on a batch of {len(items)}"
            return
        if len(got) != len(running):
            self.failure = f"the candidate returned {len(got)} results for {len(running)} inputs"
            return
        for ours, theirs in zip(running, got, strict=True):
            self.seen += 1
            if agree(ours, theirs):
                self.agreed += 1
            elif len(self.examples) < 3:
                self.examples.append(f"{ours.decision}/{ours.label} vs {theirs.decision}/{theirs.label}")

    @property
    def agreement(self) -> float:
        return self.agreed / self.seen if self.seen else 0.0

    def verdict(self) -> Verdict | None:
        """None while the shadow run goes on."""
        if self.failure is not None:
            return Verdict(False, self.failure)
        if self.seen < self.target:
            return None
        if self.target == 0:
            return Verdict(True, "no shadow run configured (shadow_inputs: 0)")
        summary = f"agreement {self.agreement:.3f} over {self.seen} inputs (min {self.min_agreement:g})"
        if self.agreement < self.min_agreement:
            return Verdict(False, f"{summary}; running vs candidate, e.g. {'; '.join(self.examples)}")
        return Verdict(True, summary)
