"""Modbus TCP / RTU: polling source, write-back sink, byte-order probe and simulated machines.

Configuration (kinds ``modbus-tcp``, ``modbus-rtu``, ``modbus-write``) is validated without touching the network;
pymodbus is imported only when a component opens. Register decoding is ours (`adapters.modbus_codec`), chosen
once per (dtype, order) at start-up; reads are planned once (`adapters.modbus_plan`) into the fewest requests.

Behaviour on a bad day, by design:

- a Modbus exception response (illegal address, device busy) gives ``quality="bad"`` readings for the tags of
  that request and a counted error; polling goes on;
- a slave on a shared RS-485 line that stops answering is skipped for a back-off period (bad readings at its
  poll rate), so one dead drive never stalls the others;
- a lost TCP connection or serial port ends `ModbusSource.stream` with `AdapterError`; `adapters.base.supervise`
  reopens it with back-off and jitter.

Example profile tag::

    - {name: speed, table: holding, address: 0, dtype: int16, scale: 0.1, unit: rpm}
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from adapters.base import (
    AdapterError,
    Backoff,
    DeliveryError,
    EdgeRuntimeError,
    Reading,
    Sample,
    Stats,
    StrictModel,
    free_port,
    now_ns,
)
from adapters.modbus_codec import (
    NUMERIC_DTYPES,
    ORDERS,
    ByteOrder,
    Dtype,
    decode_bits,
    decoder,
    encode,
    encode_string,
    raw_limits,
    register_count,
)
from adapters.modbus_plan import BIT_TABLES, AddressSpan, ReadRequest, plan_reads

__all__ = [
    "AddressRange",
    "ModbusRtuConfig",
    "ModbusSource",
    "ModbusTag",
    "ModbusTcpConfig",
    "ModbusWriteConfig",
    "ModbusWriteSink",
    "RtuConnection",
    "RtuSlave",
    "SimulatedMachine",
    "TcpConnection",
    "WriteAction",
    "WriteRefusedError",
    "match_orders",
    "plan_report",
    "probe_order",
    "serve_simulated",
    "simulate",
]

log = logging.getLogger("adapters.modbus")

Table = Literal["coil", "discrete", "input", "holding"]
Parity = Literal["N", "E", "O"]

_READ_METHOD = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "input": "read_input_registers",
    "holding": "read_holding_registers",
}
_FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class WriteRefusedError(EdgeRuntimeError):
    """A write to an address outside the allow-list; permanent for that result, so not a DeliveryError."""


# --------------------------------------------------------------------------------------------------- config


class AddressRange(StrictModel):
    """An inclusive range of addresses in one table."""

    table: Table = Field(description="Modbus table: coil, discrete (input), input (register), holding (register).")
    start: int = Field(ge=0, le=65535, description="First address (0-based, as sent on the wire).")
    end: int | None = Field(default=None, ge=0, le=65535, description="Last address, inclusive; default: start.")

    @property
    def last(self) -> int:
        """Last address (inclusive)."""
        return self.start if self.end is None else self.end

    @model_validator(mode="after")
    def _ordered(self) -> AddressRange:
        if self.last < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def covers(self, table: str, first: int, last: int) -> bool:
        """True when [first, last] of `table` lies wholly inside this range."""
        return table == self.table and self.start <= first and last <= self.last

    def meets(self, table: str, first: int, last: int) -> bool:
        """True when [first, last] of `table` overlaps this range."""
        return table == self.table and self.start <= last and first <= self.last


class ModbusTag(StrictModel):
    """One value of a machine: where it lives, how it is encoded, how it becomes an engineering value."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", description="Tag name; the stream is `<device id>.<name>`.")
    table: Table = Field(default="holding", description="Modbus table the value lives in.")
    address: int = Field(ge=0, le=65535, description="First address, 0-based as sent on the wire (40001 -> 0).")
    dtype: Dtype = Field(
        default="uint16",
        description="Data type: bool (a coil / discrete input), bit (one bit of a register), int16, uint16, int32, "
        "uint32, int64, float32, float64, string.",
    )
    bit: int | None = Field(default=None, ge=0, le=15, description="Bit index for dtype bit (0 = least significant).")
    length: int | None = Field(
        default=None, ge=1, le=125, description="Registers a string spans (2 latin-1 characters per register)."
    )
    byte_order: ByteOrder = Field(
        default="ABCD",
        description="Byte/word order: ABCD big-endian, CDAB word-swapped, BADC byte-swapped, DCBA little-endian.",
    )
    scale: float = Field(default=1.0, description="Engineering value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="Added after scaling.")
    unit: str = Field(default="", description="Unit of the engineering value (e.g. 'rpm', 'A', 'degC').")
    poll_interval_ms: int | None = Field(
        default=None, ge=10, description="Poll interval of this tag; default: its group's or the device's."
    )
    group: str | None = Field(default=None, description="Name of a poll group (device `poll_groups`).")
    description: str = Field(default="", description="Free text for people reading the profile.")

    @property
    def width(self) -> int:
        """Registers (bits for coil/discrete) the tag occupies."""
        return register_count(self.dtype, self.length)

    @property
    def scaled(self) -> bool:
        """True when scale/offset change the raw value (readings then carry float64)."""
        return self.scale != 1.0 or self.offset != 0.0

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        if (self.table in BIT_TABLES) != (self.dtype == "bool"):
            raise ValueError(f"dtype {self.dtype} does not fit table {self.table} (bool <-> coil/discrete)")
        if (self.dtype == "bit") != (self.bit is not None):
            raise ValueError("`bit` is required for dtype bit and only allowed there")
        if (self.dtype == "string") != (self.length is not None):
            raise ValueError("`length` is required for dtype string and only allowed there")
        if self.poll_interval_ms is not None and self.group is not None:
            raise ValueError("give either poll_interval_ms or group, not both")
        if self.address + self.width - 1 > 65535:
            raise ValueError("tag runs past address 65535")
        if self.scaled and self.dtype in ("bool", "bit", "string"):
            raise ValueError(f"scale/offset do not apply to dtype {self.dtype}")
        return self


def _unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)


class _ModbusDevice(StrictModel):
    """Fields shared by TCP and RTU devices: polling, planning limits, address safety and tags."""

    id: str = Field(default="modbus", pattern=r"^[A-Za-z0-9_\-.]+$", description="Device id; prefix of streams.")
    poll_interval_ms: int = Field(default=1000, ge=10, description="Default poll interval of the tags.")
    poll_groups: dict[str, int] = Field(
        default_factory=dict, description="Named poll intervals in ms; a tag joins one with `group`."
    )
    max_gap_registers: int = Field(
        default=10, ge=0, le=124, description="Largest hole (registers; x16 bits) the planner reads through."
    )
    max_registers_per_read: int = Field(default=125, ge=1, le=125, description="Registers per read request.")
    max_bits_per_read: int = Field(default=2000, ge=1, le=2000, description="Coils/discrete inputs per request.")
    forbidden: list[AddressRange] = Field(
        default_factory=list, description="Addresses never to read (they fault the device or are write-only)."
    )
    writable: list[AddressRange] = Field(
        default_factory=list, description="Addresses the machine accepts writes to (documents write-back targets)."
    )
    tags: list[ModbusTag] = Field(default_factory=list, description="Values to poll.")

    def _check_tags(self, tags: Sequence[ModbusTag], where: str) -> None:
        _unique([t.name for t in tags], f"tag name in {where}")
        for tag in tags:
            if tag.group is not None and tag.group not in self.poll_groups:
                raise ValueError(f"{where}: tag {tag.name!r} names unknown poll group {tag.group!r}")
            last = tag.address + tag.width - 1
            if any(r.meets(tag.table, tag.address, last) for r in self.forbidden):
                raise ValueError(f"{where}: tag {tag.name!r} ({tag.table} {tag.address}..{last}) is forbidden")

    def _check_ranges(self) -> None:
        for w in self.writable:
            if any(f.meets(w.table, w.start, w.last) for f in self.forbidden):
                raise ValueError(f"writable {w.table} {w.start}..{w.last} overlaps a forbidden range")
        for name, interval in self.poll_groups.items():
            if interval < 10:
                raise ValueError(f"poll group {name!r}: interval {interval} ms is below 10 ms")

    def interval_ms(self, tag: ModbusTag) -> int:
        """Effective poll interval of a tag."""
        if tag.poll_interval_ms is not None:
            return tag.poll_interval_ms
        if tag.group is not None:
            return self.poll_groups[tag.group]
        return self.poll_interval_ms

    def slaves(self) -> list[tuple[int, str, list[ModbusTag]]]:
        """(device id on the wire, stream prefix, tags) of every slave this config polls."""
        raise NotImplementedError


class ModbusTcpConfig(_ModbusDevice):
    """A Modbus TCP device (PLC, gateway); one unit id."""

    kind: Literal["modbus-tcp"] = Field(description="Device kind.")
    host: str = Field(default="127.0.0.1", description="Host name or IP address of the device.")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port.")
    device_id: int = Field(default=1, ge=0, le=255, description="Modbus unit id (slave address behind a gateway).")
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="Timeout of one request.")

    @model_validator(mode="after")
    def _checks(self) -> ModbusTcpConfig:
        self._check_ranges()
        if not self.tags:
            raise ValueError("a device needs at least one tag")
        self._check_tags(self.tags, "tags")
        return self

    def slaves(self) -> list[tuple[int, str, list[ModbusTag]]]:
        return [(self.device_id, self.id, list(self.tags))]


class RtuSlave(StrictModel):
    """One slave on an RS-485 line."""

    device_id: int = Field(ge=1, le=247, description="Slave address on the line.")
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="Stream infix (`<line id>.<name>.<tag>`); required when the line has several slaves.",
    )
    tags: list[ModbusTag] | None = Field(default=None, description="Tags of this slave; default: the line's `tags`.")


class ModbusRtuConfig(_ModbusDevice):
    """A Modbus RTU line (RS-485): one serial port, one or more slaves polled in turn."""

    kind: Literal["modbus-rtu"] = Field(description="Device kind.")
    serial_port: str = Field(default="/dev/ttyUSB0", description="Serial device path.")
    baudrate: int = Field(default=19200, ge=300, le=921600, description="Line speed in bit/s.")
    parity: Parity = Field(default="E", description="Parity: N, E (Modbus default) or O.")
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits.")
    timeout_s: float = Field(default=0.5, gt=0, le=60, description="Timeout of one request (per slave).")
    devices: list[RtuSlave] = Field(
        default_factory=lambda: [RtuSlave(device_id=1)], min_length=1, description="Slaves polled on this line."
    )
    dead_backoff_s: float = Field(
        default=2.0, gt=0, description="First pause before asking a silent slave again (doubles, with jitter)."
    )
    dead_backoff_max_s: float = Field(default=60.0, gt=0, description="Longest pause for a silent slave.")

    @model_validator(mode="after")
    def _checks(self) -> ModbusRtuConfig:
        self._check_ranges()
        _unique([str(d.device_id) for d in self.devices], "slave device_id")
        if len(self.devices) > 1:
            names = [d.name for d in self.devices]
            if any(n is None for n in names):
                raise ValueError("every slave needs a `name` when a line has several")
            _unique([n for n in names if n is not None], "slave name")
        for dev in self.devices:
            tags = self.tags if dev.tags is None else dev.tags
            if not tags:
                raise ValueError(f"slave {dev.device_id} has no tags (give line `tags` or slave `tags`)")
            self._check_tags(tags, f"slave {dev.device_id}")
        return self

    def slaves(self) -> list[tuple[int, str, list[ModbusTag]]]:
        return [
            (d.device_id, f"{self.id}.{d.name}" if d.name else self.id, list(self.tags if d.tags is None else d.tags))
            for d in self.devices
        ]


class TcpConnection(StrictModel):
    """Where a write sink reaches a Modbus TCP device."""

    transport: Literal["tcp"] = Field(default="tcp", description="Connection type.")
    host: str = Field(default="127.0.0.1", description="Host name or IP address.")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port.")


class RtuConnection(StrictModel):
    """Where a write sink reaches a Modbus RTU slave."""

    transport: Literal["rtu"] = Field(description="Connection type.")
    serial_port: str = Field(default="/dev/ttyUSB0", description="Serial device path.")
    baudrate: int = Field(default=19200, ge=300, le=921600, description="Line speed in bit/s.")
    parity: Parity = Field(default="E", description="Parity: N, E or O.")
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits.")


WriteDtype = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]


class WriteAction(StrictModel):
    """How one result field becomes a write.

    Modes:

    - ``value``: a coil gets ``bool(field)`` (or ``field == equals``); holding registers get
      ``round(field * scale + offset)`` encoded as `dtype` in `byte_order` (``equals`` writes 1/0);
    - ``pulse``: the coil goes on for `pulse_ms` when the field is true (or equals `equals`), then off;
    - ``pulse_per_channel``: the field lists channel indices (or is a bool mask of `channels`); coil
      ``address + channel`` pulses for each, e.g. the ejector valves of a sorter.

    Example: ``{field: eject_channels, table: coil, address: 100, mode: pulse_per_channel, channels: 16}``.
    """

    field: str = Field(description="Name of the result field the action reads.")
    table: Literal["coil", "holding"] = Field(description="Table written: coil (FC 5/15) or holding (FC 16).")
    address: int = Field(ge=0, le=65535, description="Address written (first coil for pulse_per_channel).")
    mode: Literal["value", "pulse", "pulse_per_channel"] = Field(default="value", description="See class doc.")
    equals: str | float | bool | None = Field(
        default=None, description="When set, write true/1 if the field equals this, else false/0."
    )
    dtype: WriteDtype | None = Field(default=None, description="Encoding for holding writes; default uint16.")
    byte_order: ByteOrder = Field(default="ABCD", description="Byte/word order of holding writes.")
    scale: float = Field(default=1.0, description="Raw = round(value * scale + offset) for holding writes.")
    offset: float = Field(default=0.0, description="Added after scaling (holding writes).")
    pulse_ms: int = Field(default=50, ge=1, le=60000, description="Pulse length for the pulse modes.")
    channels: int = Field(default=1, ge=1, le=1968, description="Coils a pulse_per_channel action drives.")

    @property
    def wire_dtype(self) -> str:
        """Encoding used on the wire."""
        if self.table == "coil":
            return "bool"
        return self.dtype or "uint16"

    @property
    def last(self) -> int:
        """Last address the action may write (inclusive)."""
        if self.mode == "pulse_per_channel":
            return self.address + self.channels - 1
        return self.address + register_count(self.wire_dtype) - 1

    @model_validator(mode="after")
    def _consistent(self) -> WriteAction:
        if self.mode != "value" and self.table != "coil":
            raise ValueError(f"mode {self.mode} drives coils only")
        if self.table == "coil" and self.dtype not in (None, "bool"):
            raise ValueError("a coil takes dtype bool")
        if self.table == "holding" and self.dtype == "bool":
            raise ValueError("holding registers take a numeric dtype")
        if self.mode != "pulse_per_channel" and self.channels != 1:
            raise ValueError("channels applies to pulse_per_channel only")
        if self.last > 65535:
            raise ValueError("action runs past address 65535")
        return self


class ModbusWriteConfig(StrictModel):
    """Write-back sink: turns result fields into coil/register writes, only inside an allow-list."""

    kind: Literal["modbus-write"] = Field(description="Sink kind.")
    id: str = Field(default="modbus-write", pattern=r"^[A-Za-z0-9_\-.]+$", description="Sink id.")
    connection: Annotated[TcpConnection | RtuConnection, Field(discriminator="transport")] = Field(
        default_factory=TcpConnection, description="Where the device is."
    )
    device_id: int = Field(default=1, ge=0, le=255, description="Unit id / slave address written to.")
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="Timeout of one write.")
    writable: list[AddressRange] = Field(min_length=1, description="Allow-list: the only addresses ever written.")
    actions: list[WriteAction] = Field(min_length=1, description="Result field -> write mapping.")
    latency_samples: int = Field(default=10000, ge=10, description="Write latencies kept for p50/p99.")
    max_age_s: float | None = Field(
        default=2.0,
        gt=0,
        description="Results older than this when the device is reachable again are not written (kept in the "
        "outbox's rejected table): an ejector pulse or alarm from minutes ago must not fire. null: no limit.",
    )

    @model_validator(mode="after")
    def _allowed(self) -> ModbusWriteConfig:
        for i, action in enumerate(self.actions):
            if not self.allows(action.table, action.address, action.last):
                raise ValueError(
                    f"actions[{i}] ({action.field}): {action.table} {action.address}..{action.last} is not writable"
                )
        return self

    def allows(self, table: str, first: int, last: int) -> bool:
        """True when every address in [first, last] of `table` is allow-listed."""
        return all(any(r.covers(table, a, a) for r in self.writable) for a in range(first, last + 1))


ModbusDeviceConfig = ModbusTcpConfig | ModbusRtuConfig


# --------------------------------------------------------------------------------------------------- planning


def _to_engineering(raw: npt.NDArray[Any], scale: npt.NDArray[np.float64], offset: npt.NDArray[np.float64]) -> Any:
    """Raw -> engineering; one formula shared by the source and the simulator so both agree bit for bit."""
    return raw.astype(np.float64) * scale + offset


@dataclass(slots=True)
class _PlannedRead:
    """One request with everything decided at start-up: streams, units and one decoder per (dtype, order)."""

    device_id: int
    request: ReadRequest
    streams: list[str]
    units: list[str]
    groups: list[tuple[Callable[[npt.NDArray[Any]], npt.NDArray[Any]], list[int]]]


@dataclass(slots=True)
class _PollGroup:
    interval_s: float
    reads: list[_PlannedRead]


def _group_decoder(tags: Sequence[ModbusTag], start: int) -> Callable[[npt.NDArray[Any]], npt.NDArray[Any]]:
    """Closure decoding every tag of one (dtype, order, length, scaled) set from a response array."""
    first = tags[0]
    offsets = np.array([t.address - start for t in tags], dtype=np.intp)
    if first.dtype == "bool":
        return lambda bits: bits[offsets]
    if first.dtype == "bit":
        shifts = np.array([t.bit for t in tags], dtype=np.uint16)
        return lambda regs: decode_bits(regs, offsets, shifts)
    decode = decoder(first.dtype, first.byte_order, first.length or 1)
    if first.dtype == "string" or not first.scaled:
        return lambda regs: decode(regs, offsets)
    scale = np.array([t.scale for t in tags], dtype=np.float64)
    offset = np.array([t.offset for t in tags], dtype=np.float64)
    return lambda regs: _to_engineering(decode(regs, offsets), scale, offset)


def _plan(config: ModbusDeviceConfig, *, coalesce: bool = True) -> list[_PollGroup]:
    """Poll groups (one per distinct interval) with their planned, decodable requests."""
    forbidden = [(r.table, r.start, r.last) for r in config.forbidden]
    by_interval: dict[int, list[_PlannedRead]] = {}
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
                groups = [(_group_decoder([req_tags[p] for p in pos], req.start), pos) for pos in sets.values()]
                by_interval.setdefault(interval, []).append(
                    _PlannedRead(
                        device_id,
                        req,
                        [f"{prefix}.{t.name}" for t in req_tags],
                        [t.unit for t in req_tags],
                        groups,
                    )
                )
    return [_PollGroup(ms / 1000.0, reads) for ms, reads in sorted(by_interval.items())]


def plan_report(config: ModbusDeviceConfig) -> str:
    """Human-readable read plan (`edge-runtime validate --plan`): every request, its span and its tags."""
    groups = _plan(config)
    n_tags = sum(len(t) for _, _, t in config.slaves())
    n_reqs = sum(len(g.reads) for g in groups)
    rate = sum(len(g.reads) / g.interval_s for g in groups)
    per_tag = sum(1000.0 / config.interval_ms(t) for _, _, tags in config.slaves() for t in tags)
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


# --------------------------------------------------------------------------------------------------- client


def _tcp_client(host: str, port: int, timeout_s: float) -> Any:
    from pymodbus.client import AsyncModbusTcpClient

    # retries=0 and no automatic reconnect: one request costs at most one timeout, and reconnecting is the
    # supervisor's job (with jittered back-off), not the library's
    return AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0)


def _serial_client(port: str, baudrate: int, parity: str, stopbits: int, timeout_s: float) -> Any:
    from pymodbus.client import AsyncModbusSerialClient

    return AsyncModbusSerialClient(
        port,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=8,
        timeout=timeout_s,
        retries=0,
        reconnect_delay=0,
    )


async def _connect(client: Any, what: str, timeout_s: float) -> None:
    try:
        ok = await asyncio.wait_for(client.connect(), timeout_s)
    except (TimeoutError, OSError) as exc:
        raise AdapterError(f"cannot connect to {what}: {exc!r}") from exc
    if not ok:
        raise AdapterError(f"cannot connect to {what}")


def _exceptions() -> tuple[type[Exception], type[Exception]]:
    """(connection lost, no response) exception classes of the installed pymodbus."""
    from pymodbus.exceptions import ConnectionException, ModbusIOException

    return ConnectionException, ModbusIOException


# --------------------------------------------------------------------------------------------------- source


_NAN = np.array(np.nan)


@dataclass(slots=True)
class _SlaveState:
    backoff: Backoff
    dead_until: float = 0.0
    failing: bool = False


class ModbusSource:
    """Polls a Modbus TCP device or RTU line and yields one `Reading` per tag and poll.

    Stats: ``reads``, ``readings``, ``modbus_exceptions``, ``timeouts``, ``skipped_dead``, ``overruns``.
    """

    def __init__(self, config: ModbusDeviceConfig, *, coalesce: bool = True) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._groups = _plan(config, coalesce=coalesce)
        self._client: Any = None
        self._slaves: dict[int, _SlaveState] = {}
        self._failing: set[tuple[int, str, int]] = set()
        self._consecutive_timeouts = 0
        self._errors: tuple[type[Exception], type[Exception]] | None = None

    @property
    def requests_per_cycle(self) -> int:
        """Requests one poll of every group sends (the planner's figure of merit)."""
        return sum(len(g.reads) for g in self._groups)

    async def open(self) -> None:
        cfg = self.config
        self._errors = _exceptions()
        if isinstance(cfg, ModbusTcpConfig):
            self._client = _tcp_client(cfg.host, cfg.port, cfg.timeout_s)
            await _connect(self._client, f"{cfg.host}:{cfg.port}", cfg.timeout_s + 5.0)
        else:
            self._client = _serial_client(cfg.serial_port, cfg.baudrate, cfg.parity, cfg.stopbits, cfg.timeout_s)
            await _connect(self._client, cfg.serial_port, cfg.timeout_s + 5.0)
        backoff_s = cfg.dead_backoff_s if isinstance(cfg, ModbusRtuConfig) else 1.0
        backoff_max = cfg.dead_backoff_max_s if isinstance(cfg, ModbusRtuConfig) else 30.0
        self._slaves = {dev: _SlaveState(Backoff(backoff_s, backoff_max)) for dev, _, _ in cfg.slaves()}
        self._consecutive_timeouts = 0

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def stream(self) -> AsyncIterator[Sample]:
        if self._client is None:
            raise AdapterError(f"{self.name}: stream() before open()")
        loop = asyncio.get_running_loop()
        due = [(loop.time(), i) for i in range(len(self._groups))]
        heapq.heapify(due)
        while due:
            at, i = heapq.heappop(due)
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            group = self._groups[i]
            for read in group.reads:
                for reading in await self._poll(read):
                    yield reading
            late = loop.time() - at
            if late >= group.interval_s:  # skip missed ticks rather than bursting to catch up
                self.stats["overruns"] += 1
                at += group.interval_s * math.floor(late / group.interval_s)
            heapq.heappush(due, (at + group.interval_s, i))

    async def read_all(self) -> list[Reading]:
        """Poll every request of every group once, now (one-shot reads and benchmarks; `stream` paces itself)."""
        if self._client is None:
            raise AdapterError(f"{self.name}: read_all() before open()")
        out: list[Reading] = []
        for group in self._groups:
            for read in group.reads:
                out.extend(await self._poll(read))
        return out

    def _bad(self, read: _PlannedRead, t_ns: int) -> list[Reading]:
        return [Reading(s, t_ns, _NAN, "bad", u) for s, u in zip(read.streams, read.units, strict=True)]

    async def _poll(self, read: _PlannedRead) -> list[Reading]:
        assert self._errors is not None
        connection_lost, no_response = self._errors
        cfg = self.config
        slave = self._slaves[read.device_id]
        loop = asyncio.get_running_loop()
        if slave.dead_until > loop.time():
            self.stats["skipped_dead"] += 1
            return self._bad(read, now_ns())
        req = read.request
        method = getattr(self._client, _READ_METHOD[req.table])
        self.stats["reads"] += 1
        try:
            # pymodbus times the request out itself; the outer guard only catches a wedged transport
            response = await asyncio.wait_for(
                method(req.start, count=req.count, device_id=read.device_id), cfg.timeout_s * 2 + 1.0
            )
        except connection_lost as exc:
            raise AdapterError(f"{self.name}: connection lost: {exc}") from exc
        except (no_response, TimeoutError) as exc:
            return self._on_timeout(read, slave, loop.time(), exc)
        t_ns = now_ns()
        self._consecutive_timeouts = 0
        if slave.failing:
            slave.failing = False
            slave.backoff.reset()
            log.info("event=modbus_slave_back device=%s slave=%d", self.name, read.device_id)
        key = (read.device_id, req.table, req.start)
        if response.isError():
            self.stats["modbus_exceptions"] += 1
            if key not in self._failing:
                self._failing.add(key)
                log.warning(
                    "event=modbus_exception device=%s slave=%d table=%s start=%d count=%d code=%d",
                    self.name,
                    read.device_id,
                    req.table,
                    req.start,
                    req.count,
                    int(getattr(response, "exception_code", 0)),
                )
            return self._bad(read, t_ns)
        if key in self._failing:
            self._failing.discard(key)
            log.info("event=modbus_exception_cleared device=%s table=%s start=%d", self.name, req.table, req.start)
        if req.table in BIT_TABLES:
            raw: npt.NDArray[Any] = np.asarray(response.bits[: req.count], dtype=np.bool_)
        else:
            raw = np.asarray(response.registers, dtype=np.uint16)
        if raw.shape[0] < req.count:
            self.stats["short_responses"] += 1
            return self._bad(read, t_ns)
        out: list[Reading] = []
        streams, units = read.streams, read.units
        for decode, positions in read.groups:
            values = decode(raw)
            for pos, value in zip(positions, values, strict=True):
                out.append(Reading(streams[pos], t_ns, np.asarray(value), "good", units[pos]))
        self.stats["readings"] += len(out)
        return out

    def _on_timeout(self, read: _PlannedRead, slave: _SlaveState, now: float, exc: Exception) -> list[Reading]:
        self.stats["timeouts"] += 1
        if isinstance(self.config, ModbusTcpConfig):
            self._consecutive_timeouts += 1
            if not getattr(self._client, "connected", False) or self._consecutive_timeouts >= 3:
                raise AdapterError(f"{self.name}: device not answering: {exc}") from exc
        else:
            # a silent slave on a shared line: park it so the others keep their poll rate
            slave.dead_until = now + slave.backoff.next_delay()
            if not slave.failing:
                slave.failing = True
                log.warning("event=modbus_slave_silent device=%s slave=%d", self.name, read.device_id)
        return self._bad(read, now_ns())


# --------------------------------------------------------------------------------------------------- sink


@dataclass(slots=True)
class _Write:
    table: str
    address: int
    values: list[int] | list[bool]


class ModbusWriteSink:
    """Writes result fields to coils/registers (e.g. ejector valves, an alarm coil, a score register).

    `deliver` returns once the device acknowledged every write; latencies are kept for p50/p99. Addresses
    outside `writable` are refused at validation and again here (`WriteRefusedError`).
    Stats: ``delivered``, ``writes``, ``refused``, ``missing_field``, ``clipped``, ``write_errors``.
    """

    def __init__(self, config: ModbusWriteConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self.latencies_ns: collections.deque[int] = collections.deque(maxlen=config.latency_samples)
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._pulse_until = [np.zeros(a.channels) for a in config.actions]
        self._releases: set[asyncio.Task[None]] = set()
        self._modbus_error: type[Exception] = OSError  # pymodbus's root error once open

    async def open(self) -> None:
        from pymodbus.exceptions import ModbusException

        self._modbus_error = ModbusException
        conn = self.config.connection
        if isinstance(conn, TcpConnection):
            self._client = _tcp_client(conn.host, conn.port, self.config.timeout_s)
            await _connect(self._client, f"{conn.host}:{conn.port}", self.config.timeout_s + 5.0)
        else:
            self._client = _serial_client(
                conn.serial_port, conn.baudrate, conn.parity, conn.stopbits, self.config.timeout_s
            )
            await _connect(self._client, conn.serial_port, self.config.timeout_s + 5.0)

    async def close(self) -> None:
        if self._releases:  # never leave a valve open: finish pending pulse ends first
            await asyncio.wait(list(self._releases), timeout=5.0)
        if self._client is not None:
            self._client.close()
            self._client = None

    def latency_ms(self) -> dict[str, float]:
        """p50 / p99 / max of recorded write latencies, in ms."""
        if not self.latencies_ns:
            return {"n": 0.0, "p50": math.nan, "p99": math.nan, "max": math.nan}
        arr = np.fromiter(self.latencies_ns, dtype=np.float64) / 1e6
        p50, p99 = np.percentile(arr, [50, 99])
        return {"n": float(arr.size), "p50": float(p50), "p99": float(p99), "max": float(arr.max())}

    def _coil_state(self, deadlines: npt.NDArray[np.float64]) -> list[bool]:
        return [bool(x) for x in deadlines > time.monotonic()]

    def _plan_writes(
        self, result: Mapping[str, Any]
    ) -> tuple[list[_Write], list[tuple[int, npt.NDArray[np.float64], float]]]:
        """Writes for one result, plus the pulse deadlines to commit once every write passed the allow-list."""
        writes: list[_Write] = []
        pulses: list[tuple[int, npt.NDArray[np.float64], float]] = []
        for i, action in enumerate(self.config.actions):
            if action.field not in result:
                self.stats["missing_field"] += 1
                continue
            value = result[action.field]
            if action.equals is not None:
                value = value == action.equals
            if action.mode in ("pulse", "pulse_per_channel"):
                channels = (
                    self._channels(action, value) if action.mode == "pulse_per_channel" else np.arange(int(bool(value)))
                )
                if channels.size == 0:
                    continue
                until = time.monotonic() + action.pulse_ms / 1000.0
                deadlines = self._pulse_until[i].copy()
                deadlines[channels] = until
                writes.append(_Write("coil", action.address, self._coil_state(deadlines)))
                pulses.append((i, deadlines, until))
            elif action.table == "coil":
                writes.append(_Write("coil", action.address, [bool(value)]))
            else:
                writes.append(_Write("holding", action.address, self._registers(action, value)))
        return writes, pulses

    def _channels(self, action: WriteAction, value: Any) -> npt.NDArray[np.intp]:
        arr = np.asarray(value)
        if arr.dtype == np.bool_:
            if arr.shape != (action.channels,):
                raise WriteRefusedError(f"{action.field}: mask of {arr.shape} for {action.channels} channels")
            return np.flatnonzero(arr)
        idx = arr.astype(np.intp).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= action.channels):
            self.stats["refused"] += 1
            raise WriteRefusedError(
                f"{action.field}: channel {idx.tolist()} outside 0..{action.channels - 1} (coil {action.address}+)"
            )
        return idx

    def _registers(self, action: WriteAction, value: Any) -> list[int]:
        raw = float(value) * action.scale + action.offset
        lo, hi = raw_limits(action.wire_dtype)
        if not lo <= raw <= hi or not math.isfinite(raw):
            self.stats["clipped"] += 1
            raw = float(np.clip(np.nan_to_num(raw), lo, hi))
        return [int(r) for r in encode(action.wire_dtype, action.byte_order, raw)[0]]

    def _check(self, write: _Write) -> None:
        last = write.address + len(write.values) - 1
        if not self.config.allows(write.table, write.address, last):
            self.stats["refused"] += 1
            raise WriteRefusedError(f"{self.name}: {write.table} {write.address}..{last} is not allow-listed")

    async def _send(self, write: _Write) -> None:
        client = self._client
        if client is None:
            raise DeliveryError(f"{self.name}: not open")
        dev = self.config.device_id
        try:
            if write.table == "coil":
                if len(write.values) == 1:
                    call = client.write_coil(write.address, bool(write.values[0]), device_id=dev)
                else:
                    call = client.write_coils(write.address, [bool(v) for v in write.values], device_id=dev)
            else:
                call = client.write_registers(write.address, [int(v) for v in write.values], device_id=dev)
            response = await asyncio.wait_for(call, self.config.timeout_s * 2 + 1.0)
        except (TimeoutError, OSError, self._modbus_error) as exc:
            self.stats["write_errors"] += 1
            raise DeliveryError(f"{self.name}: write {write.table} {write.address} failed: {exc!r}") from exc
        if response.isError():
            self.stats["write_errors"] += 1
            raise DeliveryError(f"{self.name}: device refused {write.table} {write.address}: {response}")
        self.stats["writes"] += 1

    async def deliver(self, result: Mapping[str, Any]) -> None:
        start = time.perf_counter_ns()
        writes, pulses = self._plan_writes(result)
        for write in writes:
            self._check(write)
        for index, deadlines, _ in pulses:
            self._pulse_until[index] = deadlines
        async with self._lock:
            for write in writes:
                await self._send(write)
        if writes:
            self.latencies_ns.append(time.perf_counter_ns() - start)
        self.stats["delivered"] += 1
        for index, _, until in pulses:
            task = asyncio.create_task(self._release(index, until))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, index: int, until: float) -> None:
        """End a pulse: rewrite the action's coils from the current deadlines (later pulses stay on)."""
        await asyncio.sleep(max(0.0, until - time.monotonic()) + 0.001)
        action = self.config.actions[index]
        state = self._coil_state(self._pulse_until[index])
        write = _Write("coil", action.address, state if action.mode == "pulse_per_channel" else [state[0]])
        try:
            async with self._lock:
                await self._send(write)
        except DeliveryError as exc:
            self.stats["pulse_end_errors"] += 1
            log.error("event=modbus_pulse_end_failed sink=%s address=%d error=%r", self.name, action.address, exc)


# --------------------------------------------------------------------------------------------------- probe


def _tag_line(table: str, address: int, dtype: str, order: str, scale: float, value: float) -> str:
    scale_part = "" if scale == 1.0 else f", scale: {scale:g}"
    return (
        f"- {{name: probe_{table}_{address}, table: {table}, address: {address}, dtype: {dtype}, "
        f"byte_order: {order}{scale_part}}}  # reads {value:.6g}"
    )


def match_orders(
    regs: npt.NDArray[np.uint16], first: int, register: int, table: str, expect: float, tolerance: float
) -> list[str]:
    """Profile lines for every (start, dtype, order, scale) whose decoding of `regs` is within tolerance."""
    lines: list[tuple[int, str]] = []
    scales = (1.0, 0.1, 0.01, 0.001, 10.0)
    for start in (register, register - 1, register + 1):
        offset = start - first
        # a float match is rarely an accident; among integers the narrowest that fits is the likeliest
        for dtype in ("float32", "float64", "int16", "uint16", "int32", "uint32", "int64"):
            width = register_count(dtype)
            if offset < 0 or offset + width > regs.size:
                continue
            # 16-bit values ignore word order: report ABCD and BADC only
            for order in ORDERS if width > 1 else ("ABCD", "BADC"):
                value = float(decoder(dtype, order)(regs, np.array([offset], dtype=np.intp))[0])
                if not math.isfinite(value):
                    continue
                for scale in scales if dtype[0] in "iu" else (1.0,):
                    scaled = value * scale
                    if abs(scaled - expect) <= tolerance * max(1.0, abs(expect)):
                        rank = (0 if start == register else 10) + (0 if scale == 1.0 else 1)
                        lines.append((rank, _tag_line(table, start, dtype, order, scale, scaled)))
    return [line for _, line in sorted(lines, key=lambda x: x[0])]


async def probe_order(
    host: str,
    port: int,
    device_id: int,
    table: str,
    register: int,
    expect: float,
    tolerance: float = 1e-3,
    *,
    timeout_s: float = 2.0,
) -> list[str]:
    """Find which dtype/byte order (and decimal scale) makes `register` read `expect`.

    Reads a few registers around `register` (a manual's off-by-one is common) and returns ready-to-paste
    profile tag lines, best first: exact address before neighbours, unscaled before scaled. `tolerance` is
    relative to `expect` (absolute below 1). An empty list means no combination matched.
    """
    if table not in ("holding", "input"):
        raise ValueError("probe_order reads holding or input registers")
    client = _tcp_client(host, port, timeout_s)
    await _connect(client, f"{host}:{port}", timeout_s + 5.0)
    try:
        method = getattr(client, _READ_METHOD[table])
        windows = [(max(0, register - 1), register + 5), (register, register + 4), (register, register + 2)]
        windows.append((register, register + 1))
        for first, stop in windows:
            response = await asyncio.wait_for(
                method(first, count=stop - first, device_id=device_id), timeout_s * 2 + 1.0
            )
            if not response.isError():
                regs = np.asarray(response.registers, dtype=np.uint16)
                return match_orders(regs, first, register, table, expect, tolerance)
        raise AdapterError(f"device refuses to read {table} {register}: {response}")
    finally:
        client.close()


# --------------------------------------------------------------------------------------------------- simulator


_PLAUSIBLE = {  # unit -> (base, amplitude, period_s) of a simulated reading
    "hz": (50.0, 0.5, 30.0),
    "rpm": (1450.0, 30.0, 20.0),
    "a": (12.0, 2.0, 15.0),
    "v": (400.0, 5.0, 25.0),
    "degc": (45.0, 3.0, 120.0),
    "c": (45.0, 3.0, 120.0),
    "°c": (45.0, 3.0, 120.0),
    "bar": (6.0, 0.3, 10.0),
    "kw": (7.5, 1.0, 20.0),
    "%": (50.0, 20.0, 40.0),
    "mm/s": (2.5, 0.8, 8.0),
}


def _sim_value(tag: ModbusTag, t: float) -> float | bool | str:
    """A plausible, time-varying engineering value for a tag (deterministic per name)."""
    seed = zlib.crc32(tag.name.encode())
    phase = (seed % 1000) / 1000.0
    if tag.dtype in ("bool", "bit"):
        period = 2.0 + seed % 5
        return bool((int(t / period + phase * 2) + seed) % 2)
    if tag.dtype == "string":
        return f"SIM-{seed % 100000:05d}"
    counter = any(w in tag.name.lower() for w in ("count", "total", "hours", "pieces")) or tag.unit in ("pcs", "h")
    if counter:
        return float(seed % 1000) + 3.0 * t
    base, amp, period = _PLAUSIBLE.get(tag.unit.lower(), (100.0, 10.0, 30.0))
    return base + amp * math.sin(2 * math.pi * (t / period + phase))


@dataclass(slots=True)
class _TableImage:
    """Register (or bit) image of one table of one simulated slave, covering [start, start + size)."""

    start: int
    values: npt.NDArray[Any]
    covered: npt.NDArray[np.bool_]
    runs: list[tuple[int, int]]  # (first offset, stop offset) of tag-covered stretches, written each tick


class SimulatedMachine:
    """A simulated machine serving a device profile over Modbus TCP or RTU, with known values.

    `values` maps each stream (`<id>.<tag>`, as `ModbusSource` names them) to the engineering value the
    server currently holds, quantised exactly as a client decodes it. `silence(device_id)` makes a slave
    stop answering (a dead drive on the line); `set(stream, value)` pins a value.
    """

    def __init__(self, config: ModbusDeviceConfig, *, vary: bool = True, tick_s: float = 0.2) -> None:
        self.config = config
        self.vary = vary
        self.tick_s = tick_s
        self.values: dict[str, Any] = {}
        self.port: int | str | None = None
        self._pinned: dict[str, Any] = {}
        self._silent: set[int] = set()
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()
        self._images: dict[tuple[int, str], _TableImage] = {}
        self._tags = [(dev, f"{prefix}.{t.name}", t) for dev, prefix, tags in config.slaves() for t in tags]
        self._build_images()
        self._fill(0.0)

    def _build_images(self) -> None:
        forbidden = [(r.table, r.start, r.last) for r in self.config.forbidden]
        spans: dict[tuple[int, str], list[tuple[int, int]]] = {}
        for dev, _, tag in self._tags:
            spans.setdefault((dev, tag.table), []).append((tag.address, tag.address + tag.width - 1))
        for dev, _, _ in self.config.slaves():
            for r in self.config.writable:
                spans.setdefault((dev, r.table), [])
        for key, tag_spans in spans.items():
            dev, table = key
            extra = [(r.start, r.last) for r in self.config.writable if r.table == table]
            lo = min(a for a, _ in tag_spans + extra)
            hi = max(b for _, b in tag_spans + extra)
            size = hi - lo + 1
            covered = np.zeros(size, dtype=np.bool_)
            for a, b in tag_spans:
                covered[a - lo : b - lo + 1] = True
            edges = np.flatnonzero(np.diff(np.concatenate(([0], covered.astype(np.int8), [0]))))
            runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
            values: npt.NDArray[Any] = np.zeros(size, dtype=np.bool_ if table in BIT_TABLES else np.uint16)
            self._images[key] = _TableImage(lo, values, covered, runs)
        self._forbidden = forbidden

    def _fill(self, t: float) -> None:
        """Compute every tag's value at time t into the images and `values`."""
        for image in self._images.values():
            image.values[image.covered] = 0
        for dev, stream, tag in self._tags:
            image = self._images[(dev, tag.table)]
            at = tag.address - image.start
            value = self._pinned.get(stream, _sim_value(tag, t))
            if tag.dtype == "bool":
                image.values[at] = bool(value)
                self.values[stream] = bool(value)
            elif tag.dtype == "bit":
                assert tag.bit is not None
                image.values[at] |= np.uint16(int(bool(value)) << tag.bit)
                self.values[stream] = bool(value)
            elif tag.dtype == "string":
                assert tag.length is not None
                image.values[at : at + tag.length] = encode_string(str(value), tag.byte_order, tag.length)
                self.values[stream] = str(value)[: 2 * tag.length].rstrip(" ")
            else:
                lo, hi = raw_limits(tag.dtype)
                raw_f = (float(value) - tag.offset) / tag.scale
                raw = np.asarray(np.clip(raw_f, lo, hi)).astype(NUMERIC_DTYPES[tag.dtype].replace(">", "="))
                if raw.dtype.kind in "iu":
                    raw = np.asarray(np.clip(np.rint(raw_f), lo, hi)).astype(raw.dtype)
                image.values[at : at + tag.width] = encode(tag.dtype, tag.byte_order, raw)[0]
                if tag.scaled:
                    scale = np.array([tag.scale])
                    offset = np.array([tag.offset])
                    self.values[stream] = float(_to_engineering(raw.reshape(1), scale, offset)[0])
                else:
                    self.values[stream] = raw.reshape(()).item()

    def set(self, stream: str, value: Any) -> None:
        """Pin a stream's value (applied at the next tick, or now when not varying)."""
        self._pinned[stream] = value

    def silence(self, device_id: int, silent: bool = True) -> None:
        """Make a slave stop (or resume) answering, like a drive whose RS-485 transceiver died."""
        if silent:
            self._silent.add(device_id)
        else:
            self._silent.discard(device_id)

    def _trace_pdu(self, sending: bool, pdu: Any) -> Any:
        if not sending and pdu.dev_id in self._silent:
            return None  # dropped request: the slave never answers
        return pdu

    def _devices(self) -> list[Any]:
        from pymodbus.simulator import DataType, SimData, SimDevice

        devices = []
        for dev, _, _ in self.config.slaves():
            blocks: list[list[Any]] = []
            for table in ("coil", "discrete", "holding", "input"):
                image = self._images.get((dev, table))
                entries: list[Any] = []
                if image is not None:
                    bits = table in BIT_TABLES
                    allowed = np.ones(image.values.size, dtype=np.bool_)
                    for f_table, first, last in self._forbidden:
                        if f_table == table:
                            a, b = max(first - image.start, 0), min(last - image.start, allowed.size - 1)
                            if a <= b:
                                allowed[a : b + 1] = False
                    edges = np.flatnonzero(np.diff(np.concatenate(([0], allowed.astype(np.int8), [0]))))
                    for a, b in zip(edges[::2], edges[1::2], strict=True):
                        n = int(b - a)  # values as one list: pymodbus's count= check grows with count squared
                        entries.append(
                            SimData(
                                address=image.start + int(a),
                                values=[False] * n if bits else [0] * n,
                                datatype=DataType.BITS if bits else DataType.REGISTERS,
                            )
                        )
                if not entries:  # pymodbus wants every table; an unused one holds a single cell
                    bits = table in BIT_TABLES
                    entries.append(
                        SimData(
                            address=0,
                            values=False if bits else 0,
                            datatype=DataType.BITS if bits else DataType.REGISTERS,
                        )
                    )
                blocks.append(entries)
            devices.append(SimDevice(id=dev, simdata=(blocks[0], blocks[1], blocks[2], blocks[3])))
        return devices

    async def _push(self) -> None:
        """Write the images' tag-covered runs into the server."""
        for (dev, table), image in self._images.items():
            fc = _FUNCTION_CODE[table]
            for a, b in image.runs:
                chunk = image.values[a:b]
                values = [bool(v) for v in chunk] if table in BIT_TABLES else [int(v) for v in chunk]
                await self._server.context.async_setValues(dev, fc, image.start + a, values)

    async def read(self, table: str, address: int, count: int = 1, device_id: int | None = None) -> list[Any]:
        """What the server holds right now (tests check write-backs with it)."""
        dev = self.config.slaves()[0][0] if device_id is None else device_id
        result = await self._server.context.async_getValues(dev, _FUNCTION_CODE[table], address, count)
        if not isinstance(result, list):
            raise AdapterError(f"simulator: cannot read {table} {address}: {result!r}")
        return result

    async def start(self, port: int | str | None = None) -> None:
        """Serve on `port` (TCP port on 127.0.0.1 / serial path); default: the config's port."""
        from pymodbus.server import ModbusSerialServer, ModbusTcpServer

        cfg = self.config
        if isinstance(cfg, ModbusTcpConfig):
            tcp_port = int(port) if port is not None else cfg.port
            self._server = ModbusTcpServer(self._devices(), address=(cfg.host, tcp_port), trace_pdu=self._trace_pdu)
            self.port = tcp_port
        else:
            path = str(port) if port is not None else cfg.serial_port
            self._server = ModbusSerialServer(
                self._devices(),
                port=path,
                baudrate=cfg.baudrate,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                trace_pdu=self._trace_pdu,
            )
            self.port = path
        await self._server.serve_forever(background=True)
        await self._push()
        if self.vary or self._pinned:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self._fill(time.monotonic() - self._t0 if self.vary else 0.0)
            await self._push()

    async def refresh(self) -> None:
        """Apply pinned values now (tests)."""
        self._fill(time.monotonic() - self._t0 if self.vary else 0.0)
        await self._push()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            await self._server.shutdown()
            self._server = None


@contextlib.asynccontextmanager
async def serve_simulated(
    config: ModbusDeviceConfig, *, port: int | str | None = None, vary: bool = False, tick_s: float = 0.2
) -> AsyncIterator[SimulatedMachine]:
    """Run a simulated machine for the duration of a `with` block (TCP: a free loopback port by default)."""
    machine = SimulatedMachine(config, vary=vary, tick_s=tick_s)
    if port is None and isinstance(config, ModbusTcpConfig):
        port = free_port()
    await machine.start(port)
    try:
        yield machine
    finally:
        await machine.stop()


async def simulate(
    config: ModbusDeviceConfig, *, port: int | str | None = None, stop: asyncio.Event | None = None
) -> None:
    """Serve a device profile with plausible, time-varying values until `stop` is set (or for ever)."""
    machine = SimulatedMachine(config, vary=True)
    await machine.start(port)
    log.info("event=modbus_simulator_started device=%s port=%s", config.id, machine.port)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await machine.stop()
