"""`StreamMap`: per-stream state with a bound, evicting the least recently used stream.

Streams are named by the plant (MQTT topics, tags), so a wildcard subscription and a misbehaving publisher can
create any number of them. Every per-stream map of the runtime (the pipeline's ring buffers and warnings, the
router's routes, the latest readings, a task's debounce state) is a `StreamMap` of `service.max_streams`, so
10,000 new topics cost a bounded amount of memory; evictions are counted in `stats[key]` and exported.
An evicted stream that comes back starts afresh (a new ring buffer, a new debounce history).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

__all__ = ["DEFAULT_MAX_STREAMS", "StreamMap"]

DEFAULT_MAX_STREAMS = 10_000

K = TypeVar("K")
V = TypeVar("V")


class StreamMap(Generic[K, V]):
    """A mapping of at most `limit` entries; setting a new key beyond it evicts the least recently used one.

    >>> m: StreamMap[str, int] = StreamMap(2)
    >>> m["a"], m["b"] = 1, 2
    >>> m.get("a")
    1
    >>> m["c"] = 3  # "b" was used least recently
    >>> sorted(m), m.evicted
    (['a', 'c'], 1)
    """

    def __init__(self, limit: int = DEFAULT_MAX_STREAMS, stats: Counter[str] | None = None, key: str = "") -> None:
        if limit < 1:
            raise ValueError(f"a stream map needs a limit >= 1, got {limit}")
        self.limit, self.stats, self.key = limit, stats, key or "streams_evicted"
        self.evicted = 0
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def __getitem__(self, key: K) -> V:
        value = self._data[key]
        self._data.move_to_end(key)
        return value

    def get_many(self, keys: Sequence[K]) -> list[V | None]:
        """`get` of each key, in one call (the router looks up a Modbus response's tens of tags at once)."""
        data = self._data
        found = [data.get(key) for key in keys]
        move = data.move_to_end
        for key, value in zip(keys, found, strict=True):
            if value is not None:
                move(key)
        return found

    def __setitem__(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        self._evict()

    def update(self, items: Iterable[tuple[K, V]]) -> None:
        """Set each (key, value) in order, as `m[key] = value` would."""
        data = self._data
        move = data.move_to_end
        for key, value in items:
            data[key] = value
            move(key)
        self._evict()

    def _evict(self) -> None:
        while len(self._data) > self.limit:
            self._data.popitem(last=False)
            self.evicted += 1
            if self.stats is not None:
                self.stats[self.key] += 1

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def items(self) -> list[tuple[K, V]]:
        return list(self._data.items())

    def values(self) -> list[V]:
        return list(self._data.values())

    def clear(self) -> None:
        """Forget every entry (a reload re-derives routes); not counted as evictions."""
        self._data.clear()
