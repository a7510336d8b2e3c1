"""Test helpers shared by every test module: real servers on loopback, never mocks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from adapters.base import Result
from adapters.loopback import free_port

__all__ = ["eventually", "free_port", "serving", "until", "wire"]


@contextlib.asynccontextmanager
async def serving(service: Any) -> AsyncIterator[list[Result]]:
    """Run a `Service` for the duration of the block; yields the results it stores, in order (its observer)."""
    seen: list[Result] = []
    service.result_observers.append(seen.append)
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    try:
        await service.started.wait()
        yield seen
    finally:
        stop.set()
        await runner


def wire(results: list[Result]) -> list[dict[str, Any]]:
    """Results in the flat form sinks deliver, so assertions read like the JSON a plant sees."""
    return [r.to_json() for r in results]


async def until(cond: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll until `cond()` holds, with a generous deadline for a loaded 2-core machine (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


eventually = until  # the one poll helper: `await eventually(lambda: cond, what="...")`
