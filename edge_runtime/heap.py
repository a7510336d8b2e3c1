"""Keeps the cyclic garbage collector's full passes short in the long-running service.

A full collection walks every tracked object. With every pipeline loaded that is ~55k objects of modules, schemas
and model wrappers, 12-16 ms on the reference machine: longer than a 10 ms Modbus poll, so one pass landing
between two polls left a tag's data 2.7 poll periods old (`benchmarks/bench_modbus.py`, issue 11). What start-up
built lives as long as the service, so it is moved out of the collector's reach once the service runs; what the
run allocates is still collected.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["release", "settle"]

log = logging.getLogger("edge_runtime.heap")


_holders = 0  # running services that settled the heap (tests and replays may run two in one process)


def settle(*, hold: bool = False) -> int:
    """Collect once, then freeze what is left (`gc.freeze`), so later full passes walk only what came after.

    Called when the service has started (`hold=True`: it holds the freeze until `release`) and after each reload:
    a reload drops pipelines that were frozen, and frozen cyclic garbage is never collected, so everything is
    unfrozen and collected first. That collection pauses the event loop once (12-30 ms measured), which a 10 ms
    poll group may count as late reads. Returns the number of objects frozen."""
    global _holders
    _holders += hold
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("event=heap_settled frozen=%d pause_ms=%.1f", frozen, (time.perf_counter() - t0) * 1000)
    return frozen


def release() -> None:
    """A service stopped: when no other holds the freeze, hand the frozen objects back to the collector (a process
    that starts services again, a test run, a replay, must be able to free what this one built)."""
    global _holders
    _holders = max(0, _holders - 1)
    if _holders == 0:
        gc.unfreeze()
