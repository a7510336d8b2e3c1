"""The shared tensor pipeline: per-stream windows, bounded queues with a declared policy, micro-batches, results.

Adapters hand over `Reading`s and `Frame`s; waveform blocks of any length go into a per-stream ring buffer at the
stream's own rate, windows are cut at (window, hop) and resampled to the model's rate; frames pass through.
Inputs wait in one bounded queue per pipeline, a batcher takes up to `max_batch` of them (or what arrived within
`max_wait_ms`), and the task runs in a worker thread. Results go to the outbox, which blocks when full.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from adapters.base import Frame, Reading, Result, Sample, Stats
from edge_runtime.compensation import Compensator
from edge_runtime.dsp import cut_windows, source_window_length
from edge_runtime.shadow import Shadow, Verdict
from edge_runtime.streams import DEFAULT_MAX_STREAMS, StreamMap
from edge_runtime.tasks.base import Task, Window

__all__ = ["BoundedQueue", "Pipeline", "Pipelined", "WindowBuffer"]

log = logging.getLogger("edge_runtime.pipeline")
T = TypeVar("T")

# Latency histogram bucket bounds (seconds, Prometheus `le`): cumulative counts add up across gateways.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BUCKET_EDGES_NS = np.array([round(b * 1e9) for b in LATENCY_BUCKETS_S], dtype=np.int64)


class WindowBuffer:
    """Ring buffer of one waveform stream at its own rate; cuts (window, hop) windows in the model's rate."""

    def __init__(self, stream: str, rate_hz: float, model_rate_hz: float, window: int, hop: int) -> None:
        self.stream = stream
        self.rate_hz = rate_hz
        self.n_src = source_window_length(window, model_rate_hz, rate_hz)
        self.hop_src = max(1, source_window_length(hop, model_rate_hz, rate_hz))
        self.window = window
        self._buf = np.zeros(max(4 * self.n_src, 1 << 16), dtype=np.float32)
        self._len = 0
        self._base_ns = 0  # time of the first sample since the last reset
        self._base_index = 0  # samples consumed since then: _buf[0] is sample number _base_index
        self._next_t_ns: int | None = None  # where the next block should start if the stream is continuous
        self.gaps = 0
        self.repeats = 0

    def _time_of(self, index: int) -> int:
        return self._base_ns + round(index * 1e9 / self.rate_hz)

    def push(self, t_ns: int, block: npt.NDArray[Any]) -> list[Window]:
        """Append a block; returns the windows it completes.

        A block may arrive stamped on receipt (jitter of milliseconds) and its clock may drift: a block within half
        a block's duration of where the stream should continue is continuous (the time base follows it slowly);
        one that starts later is a gap (lost data: the buffer restarts, never splicing across it); one that starts
        earlier is a repeat (e.g. a QoS 1 duplicate) and is dropped, unless the clock jumped back by seconds.
        """
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if block.size == 0:
            return []
        period_ns = 1e9 / self.rate_hz
        if self._next_t_ns is not None:
            tolerance = max(5 * period_ns, 2_000_000, 0.5 * block.size * period_ns)
            deviation = t_ns - self._next_t_ns
            if deviation > tolerance:
                self.gaps += 1
                self._len = 0
                self._next_t_ns = None
            elif deviation < -tolerance:
                if deviation > -10_000_000_000:
                    self.repeats += 1
                    return []
                self._len = 0  # the device's clock jumped back: a new time line
                self._next_t_ns = None
            else:
                self._base_ns += round(deviation / 8)  # follow drift, damp jitter
        if self._next_t_ns is None:
            self._base_ns, self._base_index = t_ns, 0
        need = self._len + block.size
        if need > self._buf.size:
            grown = np.zeros(max(need, 2 * self._buf.size), dtype=np.float32)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        self._buf[self._len : need] = block
        self._len = need
        self._next_t_ns = self._time_of(self._base_index + self._len)
        n = 0 if self._len < self.n_src else 1 + (self._len - self.n_src) // self.hop_src
        if n == 0:
            return []
        starts = np.arange(n) * self.hop_src
        samples = cut_windows(self._buf[: self._len], self.n_src, self.hop_src, self.window)
        out = [
            Window(self.stream, self._time_of(self._base_index + int(s)), samples[i], self.rate_hz)
            for i, s in enumerate(starts)
        ]
        consumed = n * self.hop_src
        rest = self._len - consumed
        self._buf[:rest] = self._buf[consumed : self._len]
        self._len = rest
        self._base_index += consumed
        return out


class BoundedQueue(Generic[T]):
    """An asyncio queue with a declared full policy: `block` (back-pressure) or `drop_oldest` (counted)."""

    def __init__(self, maxsize: int, policy: Literal["block", "drop_oldest"], stats: Stats, name: str) -> None:
        self._items: collections.deque[T] = collections.deque()
        self.maxsize = maxsize
        self.policy = policy
        self.stats = stats
        self.name = name
        self._cond = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        async with self._cond:
            if len(self._items) >= self.maxsize:
                if self.policy == "drop_oldest":
                    self._items.popleft()
                    self.stats[f"{self.name}_dropped"] += 1
                else:
                    await self._cond.wait_for(lambda: len(self._items) < self.maxsize)
            self._items.append(item)
            self._cond.notify_all()

    async def get_batch(self, max_items: int, max_wait_s: float) -> list[T]:
        """Wait for one item, then up to `max_wait_s` more for the batch to fill."""
        async with self._cond:
            await self._cond.wait_for(lambda: len(self._items) > 0)
            want = min(max_items, self.maxsize)  # a batch larger than the queue would only ever time out
            if len(self._items) < want and max_wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max_wait_s):
                        await self._cond.wait_for(lambda: len(self._items) >= want)
            batch = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            self._cond.notify_all()
            return batch


@dataclass(frozen=True, slots=True)
class Pipelined:
    """An input waiting for inference, with the wall-clock time the pipeline received what completed it."""

    item: Window | Frame
    ingest_ns: int


ResultHandler = Callable[[str, list[Result]], Awaitable[list[Result]]]
VerdictHandler = Callable[["Pipeline", Shadow, Verdict], None]


class Pipeline:
    """One model's path from matching streams to results."""

    def __init__(
        self,
        pipeline_id: str,
        inputs: Sequence[str],
        task: Task,
        model_ident: str,
        preprocessing: dict[str, Any],
        *,
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
        when_full: Literal["block", "drop_oldest"] | None,
        executor: Executor,
        on_result: ResultHandler,
        compensator: Compensator | None = None,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self.id = pipeline_id
        self.patterns = list(inputs)
        self.task = task
        self.model_ident = model_ident
        self.stats = Stats()
        self.rate_hz = float(preprocessing.get("rate_hz", 0.0))
        self.window = int(preprocessing.get("window", 0))
        self.hop = int(preprocessing.get("hop", self.window))
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.waveform = self.window > 0
        if self.waveform and not 0 < self.hop <= self.window:
            raise ValueError(f"pipeline {pipeline_id}: model hop {self.hop} must be in 1..window ({self.window})")
        policy = when_full or ("block" if self.waveform else "drop_oldest")
        self.queue: BoundedQueue[Pipelined] = BoundedQueue(queue_size, policy, self.stats, "input")
        self._buffers: StreamMap[str, WindowBuffer] = StreamMap(max_streams, self.stats, "buffers_evicted")
        self._executor = executor
        self._on_result = on_result
        self.compensator = compensator or Compensator([])
        self.latencies_ns: collections.deque[int] = collections.deque(maxlen=10_000)
        self._warned: StreamMap[str, bool] = StreamMap(max_streams, self.stats, "warnings_evicted")
        self._max_streams = max_streams
        self._bound_task_state(task)
        self._shadow: Shadow | None = None  # a candidate model being compared before it takes over
        self._on_verdict: VerdictHandler | None = None
        self._in_flight = 0  # inputs taken from the queue whose results are not stored yet
        self._failing = False  # the last batch failed: log the next failure not at all, the recovery once
        # Progress (health and watchdog): since when inputs have waited with no batch finished; None when idle.
        self.waiting_since: float | None = None
        self.latency_counts = np.zeros(len(LATENCY_BUCKETS_S) + 1, dtype=np.int64)  # last slot: above all bounds
        self.latency_sum_s = 0.0

    def _bound_task_state(self, task: Task) -> None:
        task_state = getattr(task, "stream_state", None)  # a task's own per-stream state gets the same bound
        if isinstance(task_state, StreamMap):
            task_state.limit, task_state.stats, task_state.key = self._max_streams, self.stats, "task_state_evicted"

    @property
    def shadow(self) -> Shadow | None:
        return self._shadow

    def start_shadow(self, shadow: Shadow, on_verdict: VerdictHandler | None = None) -> None:
        """Compare `shadow` with the running model on the next inputs, then swap it in or keep the running one
        (edge_runtime.shadow). A candidate already in shadow is dropped for the newer one."""
        if self._shadow is not None:
            log.warning(
                "event=model_shadow_replaced pipeline=%s dropped=%s for=%s", self.id, self._shadow.ident, shadow.ident
            )
        self._shadow, self._on_verdict = shadow, on_verdict
        log.info(
            "event=model_shadow_started pipeline=%s running=%s candidate=%s inputs=%d min_agreement=%g",
            self.id,
            self.model_ident,
            shadow.ident,
            shadow.target,
            shadow.min_agreement,
        )
        self._judge(shadow)  # a target of 0 swaps at once

    def cancel_shadow(self, why: str) -> None:
        if self._shadow is not None:
            ident = self._shadow.ident
            log.warning("event=model_shadow_cancelled pipeline=%s candidate=%s why=%r", self.id, ident, why)
            self._shadow = self._on_verdict = None

    def _judge(self, shadow: Shadow) -> None:
        verdict = shadow.verdict()
        if verdict is None or shadow is not self._shadow:
            return
        on_verdict, self._shadow, self._on_verdict = self._on_verdict, None, None
        if verdict.swap:
            previous = self.model_ident
            self.task, self.model_ident = shadow.task, shadow.ident
            self._bound_task_state(shadow.task)
            self.stats["model_swaps"] += 1
            log.warning(
                "event=model_swapped pipeline=%s from=%s to=%s %s", self.id, previous, shadow.ident, verdict.why
            )
        else:
            self.stats["model_swaps_refused"] += 1
            log.error(
                "event=model_swap_refused pipeline=%s candidate=%s running=%s stays: %s",
                self.id,
                shadow.ident,
                self.model_ident,
                verdict.why,
            )
        if on_verdict is not None:
            on_verdict(self, shadow, verdict)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being processed: every input so far has its result in the outbox."""
        return len(self.queue) == 0 and self._in_flight == 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def stalled_s(self, now: float | None = None) -> float:
        """How long inputs have been waiting without the pipeline finishing a batch (0 when idle or moving)."""
        if self.waiting_since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.waiting_since)

    def _waiting(self) -> None:
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()

    def matches(self, stream: str) -> bool:
        return any(fnmatch.fnmatchcase(stream, p) for p in self.patterns)

    def wants_side_input(self, stream: str) -> bool:
        """A tag one of the compensation layers reads (a temperature, a weld current)."""
        return self.compensator.wants(stream)

    def side_input(self, reading: Reading) -> None:
        self.compensator.push(reading)

    async def feed(self, sample: Sample) -> None:
        now = time.time_ns()
        if isinstance(sample, Frame):
            if self.waveform:
                self._warn_once(sample.stream, "frame sent to a waveform pipeline")
                return
            self._waiting()
            await self.queue.put(Pipelined(sample, now))
            return
        if not self.waveform:
            self._warn_once(sample.stream, "reading sent to a frame pipeline")
            return
        if sample.quality == "bad" or sample.value.ndim != 1 or not sample.rate_hz:
            self.stats["readings_ignored"] += 1
            self._warn_once(sample.stream, "not a good waveform block (needs quality good/uncertain, shape (n,), rate)")
            return
        buf = self._buffers.get(sample.stream)
        if buf is None or abs(buf.rate_hz - sample.rate_hz) > 1e-3 * sample.rate_hz:
            if buf is not None:
                self.stats["rate_changes"] += 1
                self._warn_once(sample.stream, f"sample rate changed from {buf.rate_hz:g} to {sample.rate_hz:g} Hz")
            buf = WindowBuffer(sample.stream, sample.rate_hz, self.rate_hz, self.window, self.hop)
            self._buffers[sample.stream] = buf
        for window in buf.push(sample.t_ns, sample.value):
            self._waiting()
            await self.queue.put(Pipelined(window, now))

    def _warn_once(self, stream: str, why: str) -> None:
        key = f"{stream}:{why}"
        if key not in self._warned:
            self._warned[key] = True
            log.warning("event=input_ignored pipeline=%s stream=%s why=%r", self.id, stream, why)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.queue.get_batch(self.max_batch, self.max_wait_s)
            self._in_flight = len(batch)
            try:
                await self._process(loop, batch)
            finally:
                self._in_flight = 0
                self.waiting_since = time.monotonic() if len(self.queue) else None

    async def _process(self, loop: asyncio.AbstractEventLoop, batch: list[Pipelined]) -> None:
        items = [p.item for p in batch]
        shadow = self._shadow
        seen: list[tuple[Sequence[Any], list[Result]]] = []  # what the running model saw (compensated) and said
        running = self.task.process

        def process(inputs: Sequence[Any]) -> list[Result]:
            outs = running(inputs)
            if shadow is not None:
                seen.append((inputs, outs))
            return outs

        try:
            outcomes = await loop.run_in_executor(self._executor, self.compensator.run, process, items)
            if len(outcomes) != len(items):
                raise ValueError(f"task returned {len(outcomes)} results for {len(items)} inputs")
        except Exception as exc:  # one bad batch must not stop the line; logged once per burst
            self.stats["batch_errors"] += 1
            if not self._failing:
                log.error("event=batch_failed pipeline=%s size=%d error=%r", self.id, len(items), exc)
            self._failing = True
            return
        if self._failing:
            log.warning("event=batch_recovered pipeline=%s failed_batches=%d", self.id, self.stats["batch_errors"])
            self._failing = False
        self.stats["batches"] += 1
        self.stats["inputs"] += len(items)
        results = []
        latencies = np.empty(len(batch), dtype=np.int64)
        for i, (pipelined, outcome) in enumerate(zip(batch, outcomes, strict=True)):
            latency = latencies[i] = time.time_ns() - pipelined.ingest_ns
            self.latencies_ns.append(latency)
            results.append(
                outcome.with_(pipeline=self.id, t_ns=pipelined.item.t_ns, latency_ns=latency, model=self.model_ident)
            )
        np.add.at(self.latency_counts, np.searchsorted(_BUCKET_EDGES_NS, latencies, side="left"), 1)
        self.latency_sum_s += float(latencies.sum()) / 1e9
        try:
            await self._on_result(self.id, results)  # one durable transaction per micro-batch
        except Exception as exc:  # storage retries on its own; what reaches here is a bug, not an outage
            self.stats["results_lost"] += len(results)
            log.error("event=result_store_failed pipeline=%s error=%r", self.id, exc)
        if shadow is not None and shadow is self._shadow and seen:
            await loop.run_in_executor(self._executor, shadow.compare, *seen[0])
            self._judge(shadow)
