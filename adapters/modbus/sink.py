"""The Modbus write-back sink: result fields become coil and register writes, only inside an allow-list.

Each `WriteAction` names a field of the result's wire form (`Result.to_json()`: head, label, score, the task's
declared `values` and `detail`), so the mapping is declared in the config and never guessed from the result.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import DeliveryError, EdgeRuntimeError, Result, Stats
from adapters.modbus.client import connect, serial_client, tcp_client
from adapters.modbus.codec import encode, raw_limits
from adapters.modbus.config import ModbusWriteConfig, TcpConnection, WriteAction

__all__ = ["ModbusWriteSink", "WriteRefusedError"]

log = logging.getLogger("adapters.modbus")


class WriteRefusedError(EdgeRuntimeError):
    """A write to an address outside the allow-list; permanent for that result, so not a DeliveryError."""


@dataclass(slots=True)
class _Write:
    table: str
    address: int
    values: list[int] | list[bool]


class ModbusWriteSink:
    """Writes result fields to coils/registers (e.g. ejector valves, an alarm coil, a score register).

    `deliver` returns once the device acknowledged every write; latencies are kept for p50/p99. Addresses
    outside `writable`, or inside `forbidden`, are refused at validation and again here (`WriteRefusedError`).
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
            self._client = tcp_client(conn.host, conn.port, self.config.timeout_s)
            await connect(self._client, f"{conn.host}:{conn.port}", self.config.timeout_s + 5.0, self.name)
        else:
            self._client = serial_client(
                conn.serial_port, conn.baudrate, conn.parity, conn.stopbits, self.config.timeout_s
            )
            await connect(self._client, conn.serial_port, self.config.timeout_s + 5.0, self.name)

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
        self, fields: Mapping[str, Any]
    ) -> tuple[list[_Write], list[tuple[int, npt.NDArray[np.float64], float]]]:
        """Writes for one result's fields, plus the pulse deadlines to commit once every write passed the
        allow-list (a refused result writes nothing)."""
        writes: list[_Write] = []
        pulses: list[tuple[int, npt.NDArray[np.float64], float]] = []
        for i, action in enumerate(self.config.actions):
            if action.field not in fields:
                self.stats["missing_field"] += 1
                continue
            value = fields[action.field]
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

    async def deliver(self, result: Result) -> None:
        start = time.perf_counter_ns()
        writes, pulses = self._plan_writes(result.to_json())
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
