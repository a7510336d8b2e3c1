"""Modbus configuration: device profiles (TCP device, RTU line) and the write-back sink, validated offline.

No I/O and no protocol library here, so `edge-runtime validate` and `schema` stay fast; every field carries a
description, so the JSON schema documents the options.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Annotated, Literal, NamedTuple

from pydantic import Field, model_validator

from adapters.base import AddressBlock, DeviceConfigBase, ExclusiveResource, SinkConfigBase, StrictModel
from adapters.modbus.codec import ByteOrder, Dtype, register_count
from adapters.modbus.plan import BIT_TABLES
from adapters.types import Host, Port

__all__ = [
    "AddressRange",
    "ModbusDeviceBase",
    "ModbusDeviceConfig",
    "ModbusRtuConfig",
    "ModbusTag",
    "ModbusTcpConfig",
    "ModbusWriteConfig",
    "RtuConnection",
    "RtuSlave",
    "SerialLine",
    "Slave",
    "TcpConnection",
    "WriteAction",
    "WriteDtype",
]

Table = Literal["coil", "discrete", "input", "holding"]
Parity = Literal["N", "E", "O"]


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


class Slave(NamedTuple):
    """One slave a device config polls: its address on the wire, the prefix of its streams and its tags."""

    device_id: int
    prefix: str
    tags: list[ModbusTag]


class ModbusDeviceBase(DeviceConfigBase):
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

    @abstractmethod
    def slaves(self) -> list[Slave]:
        """Every slave this config polls (one for TCP, one or more on an RTU line)."""

    def stream_names(self) -> list[str]:
        return [f"{slave.prefix}.{tag.name}" for slave in self.slaves() for tag in slave.tags]


class ModbusTcpConfig(ModbusDeviceBase):
    """A Modbus TCP device (PLC, gateway); one unit id."""

    kind: Literal["modbus-tcp"] = Field(description="Device kind.")
    host: Host = Field(default="127.0.0.1", description="Host name or IP address of the device.")
    port: Port = Field(default=502, description="TCP port.")
    device_id: int = Field(default=1, ge=0, le=255, description="Modbus unit id (slave address behind a gateway).")
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="Timeout of one request.")

    @model_validator(mode="after")
    def _checks(self) -> ModbusTcpConfig:
        self._check_ranges()
        if not self.tags:
            raise ValueError("a device needs at least one tag")
        self._check_tags(self.tags, "tags")
        return self

    def forbidden_blocks(self) -> list[AddressBlock]:
        return [
            AddressBlock(f"tcp {self.host.lower()}:{self.port}", r.table, r.start, r.last, f"forbidden.{i}")
            for i, r in enumerate(self.forbidden)
        ]

    def slaves(self) -> list[Slave]:
        return [Slave(self.device_id, self.id, list(self.tags))]


class RtuSlave(StrictModel):
    """One slave on an RS-485 line."""

    device_id: int = Field(ge=1, le=247, description="Slave address on the line.")
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="Stream infix (`<line id>.<name>.<tag>`); required when the line has several slaves.",
    )
    tags: list[ModbusTag] | None = Field(default=None, description="Tags of this slave; default: the line's `tags`.")


class SerialLine(StrictModel):
    """Settings of an RS-485 line, shared by the polling source and the write sink."""

    serial_port: str = Field(default="/dev/ttyUSB0", description="Serial device path.")
    baudrate: int = Field(default=19200, ge=300, le=921600, description="Line speed in bit/s.")
    parity: Parity = Field(default="E", description="Parity: N, E (Modbus default) or O.")
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits.")


class ModbusRtuConfig(SerialLine, ModbusDeviceBase):
    """A Modbus RTU line (RS-485): one serial port, one or more slaves polled in turn."""

    kind: Literal["modbus-rtu"] = Field(description="Device kind.")
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

    def slaves(self) -> list[Slave]:
        return [
            Slave(
                d.device_id, f"{self.id}.{d.name}" if d.name else self.id, list(self.tags if d.tags is None else d.tags)
            )
            for d in self.devices
        ]

    def forbidden_blocks(self) -> list[AddressBlock]:
        return [
            AddressBlock(f"serial {self.serial_port}", r.table, r.start, r.last, f"forbidden.{i}")
            for i, r in enumerate(self.forbidden)
        ]

    def exclusive_resources(self) -> list[ExclusiveResource]:
        """One serial line, one owner: two devices polling one port would garble each other's frames."""
        return [
            ExclusiveResource(
                "serial_port", f"serial port '{self.serial_port}'", "list all slaves of one line in one device"
            )
        ]


class TcpConnection(StrictModel):
    """Where a write sink reaches a Modbus TCP device."""

    transport: Literal["tcp"] = Field(default="tcp", description="Connection type.")
    host: Host = Field(default="127.0.0.1", description="Host name or IP address.")
    port: Port = Field(default=502, description="TCP port.")


class RtuConnection(SerialLine):
    """Where a write sink reaches a Modbus RTU slave."""

    transport: Literal["rtu"] = Field(description="Connection type.")


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


class ModbusWriteConfig(SinkConfigBase):
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

    forbidden: list[AddressRange] = Field(
        default_factory=list,
        description="Never written, even inside `writable` (the device's program area). `validate` also refuses "
        "actions that hit a `forbidden` range of a device deployed on the same host:port or serial line.",
    )

    @property
    def endpoint(self) -> str:
        c = self.connection
        return f"tcp {c.host.lower()}:{c.port}" if isinstance(c, TcpConnection) else f"serial {c.serial_port}"

    def allows(self, table: str, first: int, last: int) -> bool:
        """True when every address in [first, last] of `table` is allow-listed and none is forbidden."""
        if any(r.meets(table, first, last) for r in self.forbidden):
            return False
        return all(any(r.covers(table, a, a) for r in self.writable) for a in range(first, last + 1))

    def written_blocks(self) -> list[AddressBlock]:
        return [
            AddressBlock(self.endpoint, a.table, a.address, a.last, f"actions.{i}") for i, a in enumerate(self.actions)
        ]

    def max_age(self) -> float | None:
        return self.max_age_s


ModbusDeviceConfig = ModbusTcpConfig | ModbusRtuConfig
