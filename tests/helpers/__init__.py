"""Test helpers shared by every test module: real servers on loopback, never mocks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from adapters.base import free_port

__all__ = ["free_port", "until"]


async def until(cond: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll until `cond()` holds, with a generous deadline for a loaded 2-core machine (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)
