"""adapters.supervise: the guarded decode path and the sample sanity check every source's output passes."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest

from adapters.base import BatchSource, Frame, Reading, Sample, Stats
from adapters.supervise import (
    Backoff,
    DecodeGuard,
    InsaneSampleError,
    abort_quietly,
    cancel_and_wait,
    check_sample,
    supervise,
)
from tests.helpers import until


def _deep(n: int) -> Any:
    return _deep(n + 1)


@pytest.mark.parametrize(
    "decode",
    [
        lambda: _deep(0),  # RecursionError
        lambda: float(10**400),  # OverflowError
        lambda: {"a"} < [],  # type: ignore[operator]  # TypeError
        lambda: Reading("s", 10**30, np.array(1.0)),  # t_ns beyond int64
    ],
)
def test_guard_counts_any_exception(decode: Any, caplog: pytest.LogCaptureFixture) -> None:
    stats: Counter[str] = Counter()
    guard = DecodeGuard("test_malformed", stats, source="s1")
    with caplog.at_level(logging.WARNING, logger="adapters"):
        assert guard(decode) is None
        assert guard(decode) is None
    assert stats["malformed"] == 2
    assert sum("event=test_malformed" in m and "source=s1" in m for m in caplog.messages) == 1  # once per burst


def test_guard_passes_good_values_and_lists() -> None:
    stats: Counter[str] = Counter()
    guard = DecodeGuard("x", stats)
    r = Reading("s", 1, np.array([1.0, 2.0]), rate_hz=100.0)
    assert guard(lambda: r) is r
    assert guard(lambda: [r, r]) == [r, r]
    assert guard(lambda: [r, Reading("s", 1, np.array(np.inf))]) is None  # one insane reading refuses the batch
    assert stats["malformed"] == 1


@pytest.mark.parametrize(
    "sample",
    [
        Reading("s", -1, np.array(1.0)),
        Reading("s", 2**63, np.array(1.0)),
        Reading("s", 1, np.array([1.0, np.nan]), rate_hz=100.0),
        Reading("s", 1, np.array(np.inf), quality="uncertain"),
        Reading("s", 1, np.array([1.0]), rate_hz=float("inf")),
        Reading("s", 1, np.array([1.0]), rate_hz=1e-300),
        Reading("s", 1, np.array([1.0]), rate_hz=float("nan")),
        Frame("c", 1, np.zeros((2, 2), np.uint8), {}),
        Frame("c", 1, np.zeros((0, 2, 3), np.uint8), {}),
    ],
)
def test_check_sample_refuses(sample: Reading | Frame) -> None:
    with pytest.raises(InsaneSampleError):
        check_sample(sample)


def test_check_sample_lets_bad_quality_carry_nan() -> None:
    r = Reading("s", 1, np.array(np.nan), quality="bad")
    assert check_sample(r) is r
    assert check_sample(Reading("s", 1, np.array("text"))) is not None  # string tags have no finiteness


def stubborn(swallow: list[int]) -> asyncio.Task[None]:
    """A task that lets `swallow[0]` cancellations pass, as Python 3.11's wait_for does when the awaited future
    completes just as the cancellation arrives."""

    async def run() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallow[0] <= 0:
                    raise
                swallow[0] -= 1

    return asyncio.create_task(run(), name="stubborn")


async def test_cancel_and_wait_repeats_a_lost_cancellation() -> None:
    swallow = [2]
    task = stubborn(swallow)
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, retry_s=0.01)
    assert task.cancelled() and swallow == [0]


async def test_cancel_and_wait_gives_up_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    swallow = [10**9]
    task = stubborn(swallow)
    await asyncio.sleep(0)
    assert not await cancel_and_wait(task, retry_s=0.01, limit_s=0.1)
    assert not task.done() and "event=task_not_cancelled task=stubborn" in caplog.text
    swallow[0] = 0
    assert await cancel_and_wait(task, retry_s=0.01)


class _Grouped:
    """A source of two groups of two readings: a `BatchSource` when `batched`, a plain `Source` otherwise."""

    def __init__(self, batched: bool) -> None:
        self.name, self.stats, self.closed = "grouped", Stats(), asyncio.Event()
        self.groups = [[Reading(f"g.{i}{j}", i, np.array(float(j))) for j in range(2)] for i in range(2)]
        if batched:
            self.batches = self._batches

    async def open(self) -> None:
        if self.closed.is_set():  # the second session: park until cancelled
            await asyncio.Event().wait()

    async def _batches(self) -> AsyncIterator[list[Reading]]:
        for group in self.groups:
            yield group

    async def stream(self) -> AsyncIterator[Reading]:
        for group in self.groups:
            for reading in group:
                yield reading

    async def close(self) -> None:
        self.closed.set()


@pytest.mark.parametrize("batched", [True, False])
async def test_supervise_hands_a_batch_source_s_groups_over_whole(batched: bool) -> None:
    source = _Grouped(batched)
    singles: list[Sample] = []
    groups: list[Sequence[Sample]] = []

    async def emit(sample: Sample) -> None:
        singles.append(sample)

    async def emit_batch(samples: Sequence[Sample]) -> None:
        groups.append(samples)

    assert isinstance(source, BatchSource) is batched
    task = asyncio.create_task(supervise(source, emit, emit_batch=emit_batch, backoff=Backoff(0.001, 0.001)))
    await until(source.closed.is_set, what="the first session to end")
    await cancel_and_wait(task)
    if batched:
        assert groups == source.groups and singles == []
    else:
        assert singles == [r for g in source.groups for r in g] and groups == []


def test_abort_quietly_aborts_what_can_and_never_raises() -> None:
    """The service aborts every source before a stop: a source with `abort()` drops its connection, one without is
    left to its close, and a failing abort does not stop the others from being stopped."""
    calls: list[str] = []

    class Aborts:
        name = "plc"

        def abort(self) -> None:
            calls.append(self.name)

    class Fails:
        name = "broken"

        def abort(self) -> None:
            raise OSError("already gone")

    abort_quietly(Aborts())
    abort_quietly(Fails())
    abort_quietly(object())  # no abort(): nothing to do
    assert calls == ["plc"]
