"""Pure Modbus read planner: the fewest requests that cover a set of tags, never touching a forbidden address.

Reading 40 neighbouring registers in one request costs about what one register costs, so tags are merged into
requests while the merged span stays within the protocol limit (125 registers / 2000 bits) and the hole between
two tags is at most `max_gap` registers (bits for coils and discrete inputs). Holes are read and thrown away,
which is only safe where the device allows reading them: a hole that holds a forbidden address (a register
that faults the device, a write-only block) splits the request instead. No I/O here, so it is unit-tested alone
and reported by `edge-runtime validate --plan`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["BIT_TABLES", "MAX_BITS", "MAX_REGISTERS", "AddressSpan", "ReadRequest", "plan_reads"]

MAX_REGISTERS = 125  # registers per read request (Modbus application protocol, function codes 3 and 4)
MAX_BITS = 2000  # coils / discrete inputs per read request (function codes 1 and 2)
BIT_TABLES = frozenset({"coil", "discrete"})


@dataclass(frozen=True, slots=True)
class AddressSpan:
    """What one tag needs read: `width` registers (or bits) of `table` from `address`."""

    key: int
    table: str
    address: int
    width: int

    @property
    def end(self) -> int:
        """Last address the span covers (inclusive)."""
        return self.address + self.width - 1


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read request: `count` registers (bits) of `table` from `start`, serving the spans keyed `keys`."""

    table: str
    start: int
    count: int
    keys: tuple[int, ...]

    @property
    def end(self) -> int:
        """Last address read (inclusive)."""
        return self.start + self.count - 1


def _hits(ranges: Sequence[tuple[int, int]], first: int, last: int) -> bool:
    """True when any inclusive range in `ranges` meets [first, last]."""
    return first <= last and any(lo <= last and first <= hi for lo, hi in ranges)


def plan_reads(
    spans: Iterable[AddressSpan],
    *,
    max_gap: int = 10,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    forbidden: Iterable[tuple[str, int, int]] = (),
    coalesce: bool = True,
) -> list[ReadRequest]:
    """Merge spans into requests, table by table, in address order.

    `forbidden` holds inclusive (table, first, last) ranges. A span that itself meets a forbidden range is an
    error (config validation reports it first). With `coalesce=False` every span is its own request (the
    baseline the benchmark compares against).
    """
    blocked: dict[str, list[tuple[int, int]]] = {}
    for table, first, last in forbidden:
        blocked.setdefault(table, []).append((first, last))
    by_table: dict[str, list[AddressSpan]] = {}
    for span in spans:
        if span.width < 1:
            raise ValueError(f"span {span.key} has width {span.width}")
        if _hits(blocked.get(span.table, []), span.address, span.end):
            raise ValueError(f"span {span.key} ({span.table} {span.address}..{span.end}) meets a forbidden range")
        by_table.setdefault(span.table, []).append(span)

    requests: list[ReadRequest] = []
    for table in sorted(by_table):
        limit = max_bits if table in BIT_TABLES else max_registers
        gap_limit = max_gap * 16 if table in BIT_TABLES else max_gap
        ranges = blocked.get(table, [])
        start = end = -1
        keys: list[int] = []
        for span in sorted(by_table[table], key=lambda s: (s.address, -s.width, s.key)):
            if span.width > limit:
                raise ValueError(f"span {span.key} is wider ({span.width}) than one request allows ({limit})")
            new_end = max(end, span.end)
            if (
                keys
                and coalesce
                and span.address - end - 1 <= gap_limit
                and new_end - start + 1 <= limit
                and not _hits(ranges, end + 1, span.address - 1)
            ):
                end = new_end
                keys.append(span.key)
                continue
            if keys:
                requests.append(ReadRequest(table, start, end - start + 1, tuple(keys)))
            start, end, keys = span.address, span.end, [span.key]
        if keys:
            requests.append(ReadRequest(table, start, end - start + 1, tuple(keys)))
    return requests
