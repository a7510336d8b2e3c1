"""StreamMap: the bound and LRU eviction every per-stream map of the runtime relies on."""

from __future__ import annotations

import doctest
from collections import Counter

import pytest

from edge_runtime import streams
from edge_runtime.streams import StreamMap


def test_doctest() -> None:
    assert doctest.testmod(streams).failed == 0


def test_bounded_at_three_times_the_limit_with_evictions_counted() -> None:
    stats: Counter[str] = Counter()
    m: StreamMap[str, int] = StreamMap(100, stats, "routes_evicted")
    for i in range(300):
        m[f"t{i}"] = i
        assert m.get("t0") == 0  # the hot stream is used all along and is never the one evicted
    assert len(m) == 100
    assert "t0" in m and "t299" in m and "t1" not in m
    assert m.evicted == stats["routes_evicted"] == 200


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        StreamMap(0)
