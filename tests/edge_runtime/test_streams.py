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


def test_update_and_get_many_keep_the_lru_order_of_one_by_one_use() -> None:
    stats: Counter[str] = Counter()
    one: StreamMap[str, int] = StreamMap(3)
    many: StreamMap[str, int] = StreamMap(3, stats, "latest_evicted")
    for key, value in [("a", 1), ("b", 2), ("c", 3), ("d", 4)]:
        one[key] = value
    many.update([("a", 1), ("b", 2), ("c", 3), ("d", 4)])
    assert list(many) == list(one) == ["b", "c", "d"]
    assert many.evicted == stats["latest_evicted"] == 1
    assert many.get_many(["b", "x", "c"]) == [2, None, 3]  # found keys become the most recently used
    many["e"] = 5
    assert list(many) == ["b", "c", "e"]
