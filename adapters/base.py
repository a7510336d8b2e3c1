"""Value types and role interfaces shared by every adapter.

Adapters know protocols, not models. They turn a machine's feed into `Reading`s and `Frame`s and deliver
results handed to them as plain JSON-able mappings. Retries around a whole session, bounded queues, batching and
metrics live in the pipeline (`edge_runtime`), which only sees the small protocols below.

Errors form one tree::

    EdgeRuntimeError
    ├── ConfigError          (edge_runtime.config: a bad deployment file)
    ├── ModelError           (edge_runtime.inference: checksum or I/O mismatch)
    ├── AdapterError         (a protocol component failed; the supervisor reconnects)
    │   └── DeliveryError    (a sink could not confirm delivery; the outbox keeps the result)
    └── CalibrationError     (edge_runtime.compensation: wraps calibration's ValueError)
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

__all__ = [
    "AdapterError",
    "Backoff",
    "DeliveryError",
    "EdgeRuntimeError",
    "Frame",
    "OutageLog",
    "Quality",
    "Reading",
    "Sample",
    "Sink",
    "Source",
    "Stats",
    "StrictModel",
    "close_quietly",
    "free_port",
    "jsonable",
    "now_ns",
    "supervise",
]

log = logging.getLogger("adapters")

Quality = Literal["good", "uncertain", "bad"]


class EdgeRuntimeError(Exception):
    """Root of every error the product raises on purpose."""


class AdapterError(EdgeRuntimeError):
    """A protocol component failed (connection lost, device refused); the supervisor reopens it."""


class DeliveryError(AdapterError):
    """A sink could not confirm delivery; the outbox keeps the result and retries."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays become numbers and lists, non-finite floats become null
    (JSON has no NaN). Anything else is returned as it is, for the caller's encoder to handle or refuse."""
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it), for simulators, tests and the demo."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def now_ns() -> int:
    """UTC epoch nanoseconds: the one clock adapters stamp readings with."""
    return time.time_ns()


@dataclass(frozen=True, slots=True)
class Reading:
    """One normalized value from a machine: a scalar (shape `()`) or a waveform block (shape `(n,)`)."""

    stream: str
    t_ns: int
    value: npt.NDArray[Any]
    quality: Quality = "good"
    unit: str = ""
    rate_hz: float | None = None  # set for waveform blocks: t_ns is the time of the first sample


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera image: H x W x 3 uint8 BGR (OpenCV convention)."""

    stream: str
    t_ns: int
    image: npt.NDArray[np.uint8]
    meta: Mapping[str, float | str] = field(default_factory=dict)


Sample = Reading | Frame


@runtime_checkable
class Source(Protocol):
    """A machine feed. `stream()` yields until the connection is lost, then raises; `supervise` reopens it.

    Example::

        class Thermometer:
            name = "oven1"
            stats = Stats()
            async def open(self) -> None: ...
            async def stream(self) -> AsyncIterator[Sample]:
                while True:
                    yield Reading("oven1.temp", now_ns(), np.float32(await self._read()))
            async def close(self) -> None: ...
    """

    name: str
    stats: Stats

    async def open(self) -> None: ...

    def stream(self) -> AsyncIterator[Sample]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """A destination for results. `deliver` returns only once delivery is confirmed, else raises DeliveryError."""

    name: str
    stats: Stats

    async def open(self) -> None: ...

    async def deliver(self, result: Mapping[str, Any]) -> None: ...

    async def close(self) -> None: ...


class Stats(Counter[str]):
    """Named counters a component keeps (errors, drops, reconnects); the service exports them as metrics."""


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
    open_timeout_s: float = 30.0,
    remind_every_s: float = 60.0,
) -> None:
    """Run a source for ever: open, forward every sample to `emit`, reopen with back-off when it fails.

    The default back-off tops out at 4 s so that a restarted server is picked up within seconds.
    """
    backoff = backoff or Backoff(initial_s=0.5, max_s=4.0)
    outage = OutageLog("source", source.name, remind_every_s)
    while True:
        try:
            await asyncio.wait_for(source.open(), open_timeout_s)
            outage.ok()
            backoff.reset()
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


async def close_quietly(component: Source | Sink, timeout_s: float = 5.0) -> None:
    """Close a component that may already be broken; cancellation still propagates."""
    try:
        await asyncio.wait_for(component.close(), timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("event=close_failed component=%s error=%r", component.name, exc)
