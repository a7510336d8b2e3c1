from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import Frame, Result, Stats
from edge_runtime.dsp import resample_windows
from edge_runtime.pipeline import BoundedQueue, Pipeline, WindowBuffer
from edge_runtime.shadow import Shadow
from tests import helpers

RATE = 12_000.0


def _signal(n: int) -> np.ndarray:
    return np.random.default_rng(1).normal(size=n).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=30))
def test_windows_do_not_depend_on_how_the_stream_is_cut_into_blocks(sizes: list[int]) -> None:
    x = _signal(sum(sizes))
    buf = WindowBuffer("s", RATE, RATE, window=1024, hop=512)
    got, pos, t0 = [], 0, 1_000_000_000
    for size in sizes:
        got += buf.push(t0 + round(pos * 1e9 / RATE), x[pos : pos + size])
        pos += size
    n = 0 if x.size < 1024 else 1 + (x.size - 1024) // 512
    assert len(got) == n
    for i, w in enumerate(got):
        assert np.array_equal(w.samples, x[i * 512 : i * 512 + 1024])
        assert abs(w.t_ns - (t0 + round(i * 512 * 1e9 / RATE))) <= 1


def test_48k_stream_is_cut_at_its_own_rate_and_resampled() -> None:
    x = _signal(48_000)
    buf = WindowBuffer("s", 48_000.0, RATE, window=2048, hop=2048)
    windows = buf.push(0, x)
    assert len(windows) == 48_000 // 8192
    assert windows[1].samples.shape == (2048,)
    assert np.allclose(windows[1].samples, resample_windows(x[8192:16384], 2048))
    assert windows[1].t_ns == round(8192 * 1e9 / 48_000)
    assert windows[0].source_rate_hz == 48_000.0


def test_a_lost_block_is_never_spliced_into_a_window() -> None:
    buf = WindowBuffer("s", RATE, RATE, window=1000, hop=1000)
    block = _signal(600)
    assert buf.push(0, block) == []
    late = round(1200 * 1e9 / RATE)  # 600 samples missing
    assert buf.push(late, block) == []
    assert buf.gaps == 1
    out = buf.push(late + round(600 * 1e9 / RATE), block)
    assert len(out) == 1 and out[0].t_ns == late


async def test_drop_oldest_counts_and_keeps_the_newest() -> None:
    stats = Stats()
    q: BoundedQueue[int] = BoundedQueue(3, "drop_oldest", stats, "input")
    for i in range(10):
        await q.put(i)
    assert stats["input_dropped"] == 7
    assert await q.get_batch(10, 0) == [7, 8, 9]


async def test_block_policy_applies_back_pressure() -> None:
    stats = Stats()
    q: BoundedQueue[int] = BoundedQueue(2, "block", stats, "input")
    await q.put(1)
    await q.put(2)
    waiting = asyncio.create_task(q.put(3))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert await q.get_batch(1, 0) == [1]
    await asyncio.wait_for(waiting, 2)
    assert await q.get_batch(5, 0) == [2, 3]
    assert stats["input_dropped"] == 0


async def test_batch_waits_up_to_max_wait_for_more() -> None:
    q: BoundedQueue[int] = BoundedQueue(100, "block", Stats(), "input")
    await q.put(1)

    async def later() -> None:
        await asyncio.sleep(0.05)
        await q.put(2)

    task = asyncio.create_task(later())
    batch = await q.get_batch(2, 5.0)
    await task
    assert batch == [1, 2]


async def test_a_batch_larger_than_the_queue_does_not_wait_for_ever() -> None:
    q: BoundedQueue[int] = BoundedQueue(4, "drop_oldest", Stats(), "input")
    for i in range(4):
        await q.put(i)
    # max_batch 32 > queue_size 4: a full queue is a full batch, no need to sit out max_wait
    batch = await asyncio.wait_for(q.get_batch(32, 30.0), 5.0)
    assert batch == [0, 1, 2, 3]


def test_receipt_stamped_blocks_with_jitter_and_drift_lose_no_windows() -> None:
    """Blocks stamped on arrival (+-10 ms jitter, 100 ppm clock drift) are one continuous stream."""
    rng = np.random.default_rng(3)
    buf = WindowBuffer("s", RATE, RATE, window=2048, hop=1024)
    n_blocks, size = 600, 1024  # ~51 s of signal
    windows = 0
    for i in range(n_blocks):
        ideal = i * size * 1e9 / RATE
        stamp = round(ideal * (1 + 100e-6) + rng.uniform(-10e6, 10e6))
        windows += len(buf.push(stamp, rng.normal(size=size)))
    assert buf.gaps == 0
    assert windows == 1 + (n_blocks * size - 2048) // 1024


def test_a_repeated_block_is_dropped_without_restarting_the_stream() -> None:
    buf = WindowBuffer("s", RATE, RATE, window=1024, hop=1024)
    block = _signal(600)
    buf.push(0, block)
    assert buf.push(0, block) == []  # a QoS 1 duplicate
    assert buf.repeats == 1 and buf.gaps == 0
    out = buf.push(round(600 * 1e9 / RATE), block)
    assert len(out) == 1 and np.array_equal(out[0].samples, np.concatenate([block, block])[:1024])


class _Brightness:
    """A frame task: rejects frames brighter than its limit."""

    name = "brightness"

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def process(self, items: Sequence[Any]) -> list[Result]:
        return [
            Result("", f.stream, f.t_ns, "reject" if f.image.mean() > self.limit else "accept", label="bright")
            for f in items
        ]


async def _swap_run(candidate: _Brightness, n: int = 60) -> tuple[Pipeline, list[Result]]:
    stored: list[Result] = []

    async def store(_: str, batch: list[Result]) -> list[Result]:
        stored.extend(batch)
        return batch

    with ThreadPoolExecutor(1) as pool:
        pipeline = Pipeline(
            "p", ["cam"], _Brightness(100), "m@1", {}, max_batch=4, max_wait_ms=1, queue_size=1000,
            when_full="block", executor=pool, on_result=store,
        )  # fmt: skip
        runner = asyncio.create_task(pipeline.run())
        pipeline.start_shadow(Shadow(candidate, "m@2", target=20, min_agreement=0.9))
        for i in range(n):
            await pipeline.feed(Frame("cam", i, np.full((4, 4, 3), (i * 37) % 256, np.uint8)))
        await helpers.until(lambda: len(stored) == n, what="every frame's result")
        runner.cancel()
    return pipeline, stored


async def test_a_model_that_wins_its_shadow_run_is_swapped_in_without_losing_an_input() -> None:
    pipeline, stored = await _swap_run(_Brightness(110))
    assert [r.t_ns for r in stored] == list(range(60)), "every input once, in order"
    models = [r.model for r in stored]
    first_new = models.index("m@2")
    assert first_new >= 20 and set(models[:first_new]) == {"m@1"} and set(models[first_new:]) == {"m@2"}
    assert pipeline.model_ident == "m@2" and pipeline.stats["model_swaps"] == 1 and pipeline.shadow is None
    for r in stored[first_new:]:  # the candidate's own decisions from the swap on
        assert r.decision == ("reject" if (r.t_ns * 37) % 256 > 110 else "accept")


async def test_a_model_that_disagrees_is_refused_and_the_running_one_stays() -> None:
    pipeline, stored = await _swap_run(_Brightness(250))
    assert {r.model for r in stored} == {"m@1"} and len(stored) == 60
    assert pipeline.model_ident == "m@1" and pipeline.stats["model_swaps_refused"] == 1 and pipeline.shadow is None
