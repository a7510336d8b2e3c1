"""Simulated Modbus machines: a device profile served over TCP or RTU by a real pymodbus server, with known values.

Tests, benchmarks, the demo and `edge-runtime simulate` use it; the runtime never imports it. Values are plausible
for each tag's unit and vary over time; forbidden addresses are left out of the server, so a read that touches
one faults as it would on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import AdapterError
from adapters.loopback import free_port
from adapters.modbus.client import FUNCTION_CODE
from adapters.modbus.codec import NUMERIC_DTYPES, encode, encode_string, raw_limits
from adapters.modbus.config import ModbusDeviceConfig, ModbusTag, ModbusTcpConfig
from adapters.modbus.plan import BIT_TABLES, to_engineering

__all__ = ["SimulatedMachine", "serve_simulated", "simulate"]

log = logging.getLogger("adapters.modbus")

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
                    self.values[stream] = float(to_engineering(raw.reshape(1), scale, offset)[0])
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
            fc = FUNCTION_CODE[table]
            for a, b in image.runs:
                chunk = image.values[a:b]
                values = [bool(v) for v in chunk] if table in BIT_TABLES else [int(v) for v in chunk]
                await self._server.context.async_setValues(dev, fc, image.start + a, values)

    async def read(self, table: str, address: int, count: int = 1, device_id: int | None = None) -> list[Any]:
        """What the server holds right now (tests check write-backs with it)."""
        dev = self.config.slaves()[0].device_id if device_id is None else device_id
        result = await self._server.context.async_getValues(dev, FUNCTION_CODE[table], address, count)
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


async def simulate(config: ModbusDeviceConfig, *, port: str | None, stop: asyncio.Event) -> None:
    """Serve a device profile with plausible, time-varying values until `stop` is set (`edge-runtime simulate`).

    `port` is a TCP port number for a TCP profile, a serial device path for an RTU line; None: the profile's own.
    """
    where: int | str | None = port
    if port is not None and isinstance(config, ModbusTcpConfig):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"modbus-tcp simulator {config.id}: port {port!r} is not a TCP port number")
        where = int(port)
    machine = SimulatedMachine(config, vary=True)
    await machine.start(where)
    log.info("event=modbus_simulator_started device=%s port=%s", config.id, machine.port)
    try:
        await stop.wait()
    finally:
        await machine.stop()
