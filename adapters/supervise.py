"""Keeping components alive: back-off, the outage log, the supervisor loop, and burst-limited warnings.

Framework concerns live here, around the protocol code, so an adapter holds protocol logic only.
"""

from __future__ import annotations

import asyncio
import cmath
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from adapters.base import BatchSource, EdgeRuntimeError, Frame, Reading, Sample, Source
from adapters.types import MAX_RATE_HZ, MIN_RATE_HZ

__all__ = [
    "MAX_RATE_HZ",
    "MIN_RATE_HZ",
    "Backoff",
    "BurstLog",
    "DecodeGuard",
    "InsaneSampleError",
    "OutageLog",
    "abort_quietly",
    "cancel_and_wait",
    "check_sample",
    "close_quietly",
    "supervise",
]

log = logging.getLogger("adapters")


class _Closable(Protocol):
    name: str

    async def close(self) -> None: ...


@dataclass(slots=True)
class Backoff:
    """Exponential back-off with full jitter, so a fleet of gateways does not reconnect in lock-step."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    _attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class BurstLog:
    """Counts bad inputs in `stats[key]` and warns once per burst: the first failure, then at most one summary
    (with the number suppressed) per `interval_s`. A feed that sends garbage for an hour writes a handful of lines.

    The one "log once per burst" helper of the product: sources (malformed payloads), sinks (unencodable
    results) and tasks (malformed windows or frames) all use it.
    """

    def __init__(
        self, event: str, stats: Counter[str] | None = None, key: str | None = None, *, interval_s: float = 10.0
    ) -> None:
        self.event, self.stats, self.key, self.interval_s = event, stats, key or event, interval_s
        self._last = -math.inf
        self._suppressed = 0

    def __call__(self, count: int = 1, **context: object) -> None:
        if count <= 0:
            return
        if self.stats is not None:
            self.stats[self.key] += count
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            detail = " ".join(f"{k}={v}" for k, v in context.items())
            log.warning("event=%s count=%d suppressed=%d %s", self.event, count, self._suppressed, detail)
            self._last = now
            self._suppressed = 0
        else:
            self._suppressed += count


_MAX_T_NS = 2**63 - 1  # int64 nanoseconds, what numpy, SQLite and OPC UA's DateTime can all hold


class InsaneSampleError(EdgeRuntimeError, ValueError):
    """A decoded sample the rest of the product cannot hold (a time outside int64 ns, a rate outside
    [MIN_RATE_HZ, MAX_RATE_HZ], a good value that is NaN or infinite)."""


def check_sample(sample: Sample) -> Sample:
    """The one sanity check every source's output passes, whatever the protocol: raises InsaneSampleError.

    Bad-quality readings may carry NaN (that is how a source says "no value"); good ones may not.
    """
    if not 0 <= sample.t_ns <= _MAX_T_NS:
        raise InsaneSampleError(f"t_ns {sample.t_ns} is outside int64 epoch nanoseconds")
    if isinstance(sample, Frame):
        image = sample.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
            raise InsaneSampleError(f"image of shape {image.shape} {image.dtype} is not H x W x 3 uint8")
        return sample
    if sample.rate_hz is not None and not MIN_RATE_HZ <= sample.rate_hz <= MAX_RATE_HZ:
        raise InsaneSampleError(f"rate_hz {sample.rate_hz} is outside [{MIN_RATE_HZ}, {MAX_RATE_HZ:g}]")
    value = sample.value
    if sample.quality != "bad" and value.dtype.kind in "fc":
        # a scalar through cmath (a tenth of np.isfinite's cost on a 0-d array: every polled tag passes here)
        finite = cmath.isfinite(value.item()) if value.ndim == 0 else bool(np.isfinite(value).all())
        if not finite:
            raise InsaneSampleError(f"a {sample.quality} value is NaN or infinite")
    return sample


T = TypeVar("T")


class DecodeGuard:
    """The one guarded decode path of every source: `guard(decode, payload, ...)` returns what `decode` returns,
    or None when it raises anything (RecursionError and OverflowError included); the failure is counted in
    `stats[key]` and logged once per burst. So no payload, however hostile, can end a source's session.

    Readings and frames it returns have passed `check_sample`, unless `checked_by_decoder`: a decoder that
    establishes the check's conditions itself for a whole response at once (the Modbus register decoder stamps the
    time and marks NaN/infinity `bad` in one vectorised pass; re-checking each tag cost 7 % of the ingest's CPU).
    """

    def __init__(
        self,
        event: str,
        stats: Counter[str],
        key: str = "malformed",
        *,
        checked_by_decoder: bool = False,
        **context: object,
    ) -> None:
        self._burst = BurstLog(event, stats, key)
        self._check = not checked_by_decoder
        self._context = context

    def __call__(self, decode: Callable[..., T], /, *args: object, **context: object) -> T | None:
        try:
            out = decode(*args)
            if not self._check:
                return out
            if isinstance(out, Reading | Frame):
                check_sample(out)
            elif isinstance(out, list):
                for item in out:
                    if isinstance(item, Reading | Frame):
                        check_sample(item)
            return out
        except Exception as exc:  # any payload-caused failure: counted, never raised
            self.refused(exc, **context)
            return None

    def refused(self, exc: BaseException, **context: object) -> None:
        """Count and log (once per burst) one input refused for `exc`."""
        self._burst(1, **self._context, **context, error=_short(exc))


def _short(exc: BaseException, limit: int = 200) -> str:
    text = repr(exc)
    return text if len(text) <= limit else text[:limit] + "..."


class OutageLog:
    """Logs an outage of a component once when it starts, as a reminder every `remind_every_s`, and once when
    it ends, so a device that is down all night writes a handful of lines, not thousands."""

    def __init__(self, kind: str, name: str, remind_every_s: float = 60.0) -> None:
        self.kind, self.name, self.remind_every_s = kind, name, remind_every_s
        self.down_since: float | None = None
        self.attempts = 0
        self._last_log = 0.0

    def failed(self, exc: BaseException, hint: str = "") -> None:
        now = time.monotonic()
        self.attempts += 1
        if self.down_since is None:
            self.down_since = self._last_log = now
            log.warning("event=%s_failed %s=%s error=%r%s", self.kind, self.kind, self.name, exc, hint)
        elif now - self._last_log >= self.remind_every_s:
            self._last_log = now
            log.warning(
                "event=%s_still_failing %s=%s down_s=%.0f attempts=%d error=%r",
                self.kind,
                self.kind,
                self.name,
                now - self.down_since,
                self.attempts,
                exc,
            )
        else:
            log.debug("event=%s_failed %s=%s error=%r", self.kind, self.kind, self.name, exc)

    def ok(self) -> None:
        if self.down_since is not None:
            log.warning(
                "event=%s_recovered %s=%s down_s=%.1f attempts=%d",
                self.kind,
                self.kind,
                self.name,
                time.monotonic() - self.down_since,
                self.attempts,
            )
        else:
            log.info("event=%s_open %s=%s", self.kind, self.kind, self.name)
        self.down_since, self.attempts = None, 0


async def supervise(
    source: Source,
    emit: Callable[[Sample], Awaitable[None]],
    backoff: Backoff | None = None,
    *,
    emit_batch: Callable[[Sequence[Sample]], Awaitable[None]] | None = None,
    open_timeout_s: float = 30.0,
    remind_every_s: float = 60.0,
) -> None:
    """Run a source for ever: open, forward every sample to `emit`, reopen with back-off when it fails.

    With `emit_batch`, a `BatchSource` hands its groups to it whole (`emit` then serves the other sources).
    The default back-off tops out at 4 s so that a restarted server is picked up within seconds.
    """
    backoff = backoff or Backoff(initial_s=0.5, max_s=4.0)
    outage = OutageLog("source", source.name, remind_every_s)
    while True:
        try:
            await asyncio.wait_for(source.open(), open_timeout_s)
            source.stats["opened"] += 1
            outage.ok()
            backoff.reset()
            if emit_batch is not None and isinstance(source, BatchSource):
                async for batch in source.batches():
                    await emit_batch(batch)
            else:
                async for sample in source.stream():
                    await emit(sample)
            log.warning("event=source_ended source=%s", source.name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a protocol session ends in a reconnect, never a crash
            source.stats["reconnects"] += 1
            outage.failed(exc)
        finally:
            await close_quietly(source)
        await asyncio.sleep(backoff.next_delay())


async def cancel_and_wait(task: asyncio.Task[Any], *, retry_s: float = 0.1, limit_s: float = 30.0) -> bool:
    """Cancel `task` and wait until it has ended; returns whether it did within `limit_s`.

    Python 3.11's `asyncio.wait_for` (in `supervise` and inside pymodbus's request path) returns the result
    instead of raising when the cancellation arrives just as the awaited future completes, so one `cancel()`
    can be lost and the task polls on for ever; the cancellation is repeated until the task is done.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not task.done():
        if loop.time() >= deadline:
            log.warning("event=task_not_cancelled task=%s after_s=%.0f", task.get_name(), limit_s)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=retry_s)
    return True


def abort_quietly(component: object) -> None:
    """Have a source drop its connections at once, if it can (an optional, synchronous `abort()`), before its task is
    cancelled: an answer already on its way then never reaches the protocol library. Never raises."""
    abort = getattr(component, "abort", None)
    if abort is None:
        return
    try:
        abort()
    except Exception as exc:
        log.debug("event=abort_failed component=%s error=%r", getattr(component, "name", component), exc)


async def close_quietly(component: _Closable, timeout_s: float = 5.0) -> None:
    """Close a component that may already be broken; cancellation still propagates."""
    try:
        await asyncio.wait_for(component.close(), timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("event=close_failed component=%s error=%r", component.name, exc)
