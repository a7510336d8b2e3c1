"""Modbus read planning: the fewest requests that cover a device's tags, decided once at start-up.

Reading 40 neighbouring registers in one request costs about what one register costs, so tags are merged into
requests while the merged span stays within the protocol limit (125 registers / 2000 bits) and the hole between
two tags is at most `max_gap` registers (bits for coils and discrete inputs). Holes are read and thrown away,
which is only safe where the device allows reading them: a hole that holds a forbidden address (a register
that faults the device, a write-only block) splits the request instead.

`plan_reads` is pure (no I/O, unit-tested alone); `plan_device` turns a device config into poll groups whose
requests carry their stream names and one decoder per (dtype, order), so the source's hot path only calls them;
`plan_report` prints the plan for `edge-runtime validate --plan`. No protocol library is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from adapters.modbus.codec import decode_bits, decoder, decoder_at

if TYPE_CHECKING:  # config imports BIT_TABLES from here; the planner only reads config attributes
    from adapters.modbus.config import ModbusDeviceConfig, ModbusTag

__all__ = [
    "BIT_TABLES",
    "MAX_BITS",
    "MAX_REGISTERS",
    "AddressSpan",
    "PlannedRead",
    "PollGroup",
    "ReadRequest",
    "plan_device",
    "plan_reads",
    "plan_report",
    "to_engineering",
]

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


# --------------------------------------------------------------------------------------------------- devices


def to_engineering(raw: npt.NDArray[Any], scale: npt.NDArray[np.float64], offset: npt.NDArray[np.float64]) -> Any:
    """Raw -> engineering; one formula shared by the source and the simulator so both agree bit for bit.

    A float32 register pair holding a signalling NaN sets the FPU's invalid flag when widened (numpy would warn
    once per process, at 3 a.m., about nothing): the NaN it becomes leaves as a reading of quality bad."""
    with np.errstate(invalid="ignore"):
        return raw.astype(np.float64) * scale + offset


GroupDecoder = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]


@dataclass(slots=True)
class PlannedRead:
    """One request with everything decided at start-up: streams and one decoder per (dtype, order)."""

    device_id: int
    request: ReadRequest
    streams: list[str]  # in address order, for the plan report
    groups: list[tuple[GroupDecoder, list[str], list[str]]]  # (decoder, its streams, their units) per set
    decoded_streams: tuple[str, ...]  # the streams in the order their readings leave: set by set, as in `groups`


@dataclass(slots=True)
class PollGroup:
    """Requests polled at one interval."""

    interval_s: float
    reads: list[PlannedRead]


def _group_decoder(tags: Sequence[ModbusTag], start: int) -> GroupDecoder:
    """Closure decoding every tag of one (dtype, order, length, scaled) set from a response array."""
    first = tags[0]
    offsets = np.array([t.address - start for t in tags], dtype=np.intp)
    if first.dtype == "bool":
        return lambda bits: bits[offsets]
    if first.dtype == "bit":
        shifts = np.array([t.bit for t in tags], dtype=np.uint16)
        return lambda regs: decode_bits(regs, offsets, shifts)
    if first.dtype == "string":
        decode = decoder(first.dtype, first.byte_order, first.length or 1)
        return lambda regs: decode(regs, offsets)
    decode_at = decoder_at(first.dtype, first.byte_order, offsets)
    if not first.scaled:
        return decode_at
    scale = np.array([t.scale for t in tags], dtype=np.float64)
    offset = np.array([t.offset for t in tags], dtype=np.float64)
    return lambda regs: to_engineering(decode_at(regs), scale, offset)


def plan_device(config: ModbusDeviceConfig, *, coalesce: bool = True) -> list[PollGroup]:
    """Poll groups (one per distinct interval) with their planned, decodable requests."""
    forbidden = [(r.table, r.start, r.last) for r in config.forbidden]
    by_interval: dict[int, list[PlannedRead]] = {}
    for device_id, prefix, tags in config.slaves():
        intervals = sorted({config.interval_ms(t) for t in tags})
        for interval in intervals:
            members = [t for t in tags if config.interval_ms(t) == interval]
            spans = [AddressSpan(i, t.table, t.address, t.width) for i, t in enumerate(members)]
            requests = plan_reads(
                spans,
                max_gap=config.max_gap_registers,
                max_registers=config.max_registers_per_read,
                max_bits=config.max_bits_per_read,
                forbidden=forbidden,
                coalesce=coalesce,
            )
            for req in requests:
                req_tags = [members[k] for k in req.keys]
                sets: dict[tuple[str, str, int, bool], list[int]] = {}
                for pos, tag in enumerate(req_tags):
                    order = tag.byte_order if tag.dtype not in ("bool", "bit") else "ABCD"
                    sets.setdefault((tag.dtype, order, tag.length or 1, tag.scaled), []).append(pos)
                streams = [f"{prefix}.{t.name}" for t in req_tags]
                units = [t.unit for t in req_tags]
                groups = [
                    (
                        _group_decoder([req_tags[p] for p in pos], req.start),
                        [streams[p] for p in pos],
                        [units[p] for p in pos],
                    )
                    for pos in sets.values()
                ]
                decoded = tuple(name for _, names, _ in groups for name in names)
                by_interval.setdefault(interval, []).append(PlannedRead(device_id, req, streams, groups, decoded))
    return [PollGroup(ms / 1000.0, reads) for ms, reads in sorted(by_interval.items())]


def plan_report(config: ModbusDeviceConfig) -> str:
    """Human-readable read plan (`edge-runtime validate --plan`): every request, its span and its tags."""
    groups = plan_device(config)
    slaves = config.slaves()
    n_tags = sum(len(s.tags) for s in slaves)
    n_reqs = sum(len(g.reads) for g in groups)
    rate = sum(len(g.reads) / g.interval_s for g in groups)
    per_tag = sum(1000.0 / config.interval_ms(t) for s in slaves for t in s.tags)
    lines = [
        f"{config.id} ({config.kind}): {n_tags} tags in {n_reqs} requests, {rate:.3g} requests/s "
        f"(one request per tag: {per_tag:.3g}/s)"
    ]
    for group in groups:
        lines.append(f"  every {group.interval_s * 1000:g} ms:")
        for read in group.reads:
            req = read.request
            unit = "bits" if req.table in BIT_TABLES else "registers"
            names = ", ".join(s.rsplit(".", 1)[-1] for s in read.streams)
            lines.append(
                f"    device {read.device_id} {req.table} {req.start}..{req.end} ({req.count} {unit}): {names}"
            )
    if config.forbidden:
        spans = ", ".join(f"{r.table} {r.start}..{r.last}" for r in config.forbidden)
        lines.append(f"  never read: {spans}")
    return "\n".join(lines)
