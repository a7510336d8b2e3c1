"""Simulated Modbus machines: plausible varying values, `simulate` until stopped, RTU profiles over a pty pair."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import yaml

from adapters.base import Reading
from adapters.loopback import free_port
from adapters.modbus.config import ModbusDeviceConfig, ModbusRtuConfig
from adapters.modbus.simulator import serve_simulated, simulate
from adapters.modbus.source import ModbusSource
from tests.helpers import until

from .common import DEVICES, Collector, one_cycle, plc_profile, tcp


async def test_values_vary_over_time() -> None:
    cfg = tcp(poll_interval_ms=20, tags=[{"name": "freq", "address": 0, "dtype": "float32", "unit": "Hz"}])
    async with serve_simulated(cfg, vary=True, tick_s=0.02) as machine:
        source = ModbusSource(cfg.model_copy(update={"port": machine.port}))
        await source.open()
        seen: set[float] = set()

        async def collect() -> None:
            async for sample in source.stream():
                assert isinstance(sample, Reading)
                seen.add(sample.value.item())
                if len(seen) >= 3:
                    return

        await asyncio.wait_for(collect(), 20)
        await source.close()
    assert all(45.0 < v < 55.0 for v in seen)  # plausible mains frequency around 50 Hz


async def simulated_readings(cfg: ModbusDeviceConfig, port: str) -> dict[str, Reading]:
    """Run `simulate` for a profile and poll it until every tag has read good once; the newest of each.

    The server listens shortly after the task starts: the supervisor's reconnects bridge the gap.
    """
    stop = asyncio.Event()
    task = asyncio.create_task(simulate(cfg, port=port, stop=stop))
    collector = Collector(ModbusSource(cfg))
    streams = {f"{prefix}.{t.name}" for _, prefix, tags in cfg.slaves() for t in tags}
    try:
        await until(lambda: all(collector.good(s) for s in streams), what="a good reading of every tag")
    finally:
        await collector.stop()
        stop.set()
        await asyncio.wait_for(task, 10)
    return {r.stream: r for r in collector.readings}


async def test_simulate_serves_a_profile_until_stopped() -> None:
    port = free_port()
    readings = await simulated_readings(plc_profile(port=port), str(port))
    assert all(r.quality == "good" for r in readings.values())
    assert readings["plc.parts_count"].value.dtype == np.int32
    assert isinstance(readings["plc.recipe"].value.item(), str)


async def test_simulate_refuses_a_tcp_port_that_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="not a TCP port number"):
        await simulate(plc_profile(), port="/dev/ttyUSB0", stop=asyncio.Event())


async def test_old_drive_profile_over_rtu(serial_pair: tuple[str, str]) -> None:
    device_end, client_end = serial_pair
    data = yaml.safe_load((DEVICES / "old_drive_rtu.yaml").read_text())
    cfg = ModbusRtuConfig.model_validate({**data, "id": "fan1", "serial_port": client_end, "parity": "N"})
    async with serve_simulated(cfg, port=device_end) as machine:
        machine.set("fan1.heatsink_temp", -28.4)
        await machine.refresh()
        source = ModbusSource(cfg)
        await source.open()
        try:
            readings = await one_cycle(source, len(cfg.tags))
        finally:
            await source.close()
    assert {s: r.value.item() for s, r in readings.items()} == machine.values
    assert readings["fan1.heatsink_temp"].value.item() == pytest.approx(-28.4)
    assert readings["fan1.output_frequency"].unit == "Hz"


async def test_rtu_simulate_serves_the_serial_path_it_is_given(serial_pair: tuple[str, str]) -> None:
    device_end, client_end = serial_pair
    data = yaml.safe_load((DEVICES / "old_drive_rtu.yaml").read_text())
    cfg = ModbusRtuConfig.model_validate({**data, "id": "fan1", "serial_port": client_end, "parity": "N"})
    readings = await simulated_readings(cfg, device_end)
    assert readings["fan1.output_frequency"].unit == "Hz"
