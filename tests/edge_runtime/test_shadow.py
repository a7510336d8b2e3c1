"""The shadow comparison alone: what counts as agreement, and each way a candidate is refused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.base import Result
from edge_runtime.shadow import Shadow


class Threshold:
    """A task that rejects what is above its threshold: two of them disagree exactly between the thresholds."""

    name = "threshold"

    def __init__(self, limit: float, label: str = "level") -> None:
        self.limit, self.label = limit, label

    def process(self, items: Sequence[Any]) -> list[Result]:
        return [
            Result("", "s", 0, "reject" if x > self.limit else "accept", label=self.label, score=float(x))
            for x in items
        ]


class Broken:
    name = "broken"

    def process(self, items: Sequence[Any]) -> list[Result]:
        raise ValueError("input 3 has the wrong shape")


def _run(shadow: Shadow, running: Threshold, batches: list[list[float]]) -> None:
    for batch in batches:
        shadow.compare(batch, running.process(batch))


def test_a_candidate_that_agrees_enough_is_swapped_in_after_its_inputs() -> None:
    shadow = Shadow(Threshold(0.55), "m@2", target=100, min_agreement=0.9)
    _run(shadow, Threshold(0.5), [[i / 50 for i in range(50)]])
    assert shadow.verdict() is None, "50 of 100 inputs: still in shadow"
    _run(shadow, Threshold(0.5), [[i / 50 for i in range(50)], [0.9] * 10])
    verdict = shadow.verdict()
    assert verdict is not None and verdict.swap
    assert shadow.seen == 100, "only the configured inputs are compared"
    assert shadow.agreed == 96 and "agreement 0.960 over 100 inputs" in verdict.why


def test_too_little_agreement_keeps_the_running_model_with_examples() -> None:
    shadow = Shadow(Threshold(0.8), "m@2", target=20, min_agreement=0.9)
    _run(shadow, Threshold(0.5), [[i / 20 for i in range(20)]])
    verdict = shadow.verdict()
    assert verdict is not None and not verdict.swap
    assert "agreement 0.700 over 20 inputs (min 0.9)" in verdict.why and "reject/level vs accept/level" in verdict.why


def test_another_label_is_a_disagreement_even_with_the_same_decision() -> None:
    shadow = Shadow(Threshold(0.5, label="other"), "m@2", target=10, min_agreement=0.5)
    _run(shadow, Threshold(0.5), [[0.1] * 10])
    verdict = shadow.verdict()
    assert verdict is not None and not verdict.swap and shadow.agreed == 0


def test_a_candidate_that_fails_is_refused_at_once() -> None:
    shadow = Shadow(Broken(), "m@2", target=1000, min_agreement=0.0)
    _run(shadow, Threshold(0.5), [[0.1, 0.2]])
    verdict = shadow.verdict()
    assert verdict is not None and not verdict.swap and "wrong shape" in verdict.why


def test_a_candidate_with_the_wrong_result_count_is_refused() -> None:
    class Short(Threshold):
        def process(self, items: Sequence[Any]) -> list[Result]:
            return super().process(items)[:-1]

    shadow = Shadow(Short(0.5), "m@2", target=1000, min_agreement=0.0)
    _run(shadow, Threshold(0.5), [[0.1, 0.2, 0.3]])
    verdict = shadow.verdict()
    assert verdict is not None and not verdict.swap and "2 results for 3 inputs" in verdict.why


def test_a_target_of_zero_swaps_without_inputs() -> None:
    verdict = Shadow(Threshold(0.5), "m@2", target=0, min_agreement=0.9).verdict()
    assert verdict is not None and verdict.swap
