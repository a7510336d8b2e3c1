"""Timing helpers the model benchmarks share: a rate over wall and CPU time, and alternating rounds that quick mode
cuts short (under emulation one round takes minutes)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

__all__ = ["QUICK_ROUNDS_S", "Rounds", "rate"]

QUICK_ROUNDS_S = 20.0  # quick: a further round only while the rounds so far took less (a round: ~4-5 s on x86-64)


def rate(fn: Callable[[], int], seconds: float, *, warm_up: bool = True, least_calls: int = 1) -> tuple[float, float]:
    """Items per wall second and per CPU second of `fn` (which returns how many items it handled), over at least
    `least_calls` calls and `seconds`, after one warm-up call unless `warm_up` is False (quick runs: `load_model`
    ran the session once, and under emulation one call can take minutes)."""
    if warm_up:
        fn()
    n, calls, w0, c0 = 0, 0, time.perf_counter(), time.process_time()
    while calls < least_calls or time.perf_counter() - w0 < seconds:
        n += fn()
        calls += 1
    return n / (time.perf_counter() - w0), n / max(1e-9, time.process_time() - c0)


class Rounds:
    """`for i in Rounds(n, quick)`: n alternating rounds, so load from elsewhere hits a figure and its baseline
    alike; in quick mode a further round starts only while the rounds so far took less than `QUICK_ROUNDS_S`
    (every figure has a value after the first). `done` counts the rounds run."""

    def __init__(self, n: int, quick: bool) -> None:
        self.n, self.quick, self.done = n, quick, 0

    def __iter__(self) -> Iterator[int]:
        started = time.perf_counter()
        for i in range(self.n):
            if self.quick and i and time.perf_counter() - started > QUICK_ROUNDS_S:
                return
            self.done += 1
            yield i
