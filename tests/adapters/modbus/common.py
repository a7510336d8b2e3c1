"""Builders shared by the Modbus tests: configs, results, and collectors of what a source yields."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from adapters.base import Reading, Result, Sample, Source, now_ns
from adapters.modbus.config import ModbusRtuConfig, ModbusTcpConfig, ModbusWriteConfig
from adapters.modbus.source import ModbusSource
from adapters.supervise import Backoff, cancel_and_wait, supervise

DEVICES = Path(__file__).resolve().parents[3] / "configs" / "devices"


def tcp(**fields: Any) -> ModbusTcpConfig:
    return ModbusTcpConfig.model_validate({"kind": "modbus-tcp", "id": "m", **fields})


def plc_profile(**fields: Any) -> ModbusTcpConfig:
    data = yaml.safe_load((DEVICES / "plc_tcp.yaml").read_text())
    return ModbusTcpConfig.model_validate({**data, "id": "plc", **fields})


def rtu_line(serial_port: str, **fields: Any) -> ModbusRtuConfig:
    return ModbusRtuConfig.model_validate(
        {
            "kind": "modbus-rtu",
            "id": "line1",
            "serial_port": serial_port,
            "baudrate": 115200,
            "parity": "N",  # a pty pair refuses parity settings; a real line would use the profile's
            "poll_interval_ms": 50,
            "timeout_s": 0.5,
            "dead_backoff_s": 1.0,
            "dead_backoff_max_s": 1.0,
            "devices": [{"device_id": 1, "name": "d1"}, {"device_id": 2, "name": "d2"}, {"device_id": 3, "name": "d3"}],
            "tags": [
                {"name": "speed", "address": 0, "dtype": "int16", "scale": 0.1, "unit": "rpm"},
                {"name": "freq", "address": 1, "dtype": "float32", "byte_order": "CDAB", "unit": "Hz"},
            ],
            **fields,
        }
    )


def write_config(port: int, writable: list[dict[str, Any]], actions: list[dict[str, Any]]) -> ModbusWriteConfig:
    """A write sink to a simulated device on loopback."""
    return ModbusWriteConfig.model_validate(
        {
            "kind": "modbus-write",
            "connection": {"transport": "tcp", "port": port},
            "writable": writable,
            "actions": actions,
        }
    )


def sink_config(port: int, **fields: Any) -> ModbusWriteConfig:
    """The ejector block, a score register, the alarm coil and a CDAB float, as a sorter's PLC receives them."""
    return ModbusWriteConfig.model_validate(
        {
            "kind": "modbus-write",
            "id": "ejector",
            "connection": {"transport": "tcp", "port": port},
            "writable": [
                {"table": "coil", "start": 5},
                {"table": "coil", "start": 100, "end": 115},
                {"table": "holding", "start": 20, "end": 29},
            ],
            "actions": [
                {
                    "field": "eject_channels",
                    "table": "coil",
                    "address": 100,
                    "mode": "pulse_per_channel",
                    "channels": 16,
                    "pulse_ms": 100,
                },
                {"field": "anomaly_score", "table": "holding", "address": 20, "dtype": "uint16", "scale": 1000},
                {"field": "decision", "equals": "alarm", "table": "coil", "address": 5},
                {"field": "temperature", "table": "holding", "address": 22, "dtype": "float32", "byte_order": "CDAB"},
            ],
            **fields,
        }
    )


def result(decision: str = "", **fields: Any) -> Result:
    """A result whose scalar fields are declared `values` and whose lists are `detail`, as a task builds them."""
    scalars = {k: v for k, v in fields.items() if not isinstance(v, list)}
    detail = {k: v for k, v in fields.items() if isinstance(v, list)}
    return Result(pipeline="p", stream="s", t_ns=now_ns(), decision=decision, values=scalars, detail=detail)


async def one_cycle(source: ModbusSource, n: int, timeout_s: float = 20.0) -> dict[str, Reading]:
    """The first `n` readings of a fresh stream, by stream name."""
    out: dict[str, Reading] = {}

    async def collect() -> None:
        async for sample in source.stream():
            assert isinstance(sample, Reading)
            out[sample.stream] = sample
            if len(out) >= n:
                return

    await asyncio.wait_for(collect(), timeout_s)
    return out


class Collector:
    """Runs a source under `supervise` and keeps what it emits."""

    def __init__(self, source: Source, backoff: Backoff | None = None) -> None:
        self.readings: list[Reading] = []
        self.task = asyncio.create_task(supervise(source, self.emit, backoff or Backoff(0.05, 0.3)))

    async def emit(self, sample: Sample) -> None:
        assert isinstance(sample, Reading)
        self.readings.append(sample)

    def good(self, stream: str) -> int:
        return sum(1 for r in self.readings if r.stream == stream and r.quality == "good")

    async def stop(self) -> None:
        assert await cancel_and_wait(self.task)  # one cancel() can be lost in Python 3.11's wait_for
        assert self.task.cancelled()
