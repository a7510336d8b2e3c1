"""adapters.supervise: the guarded decode path and the sample sanity check every source's output passes."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import numpy as np
import pytest

from adapters.base import Frame, Reading
from adapters.supervise import DecodeGuard, InsaneSampleError, cancel_and_wait, check_sample


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
