"""The simulated machine (adapters.opcua.simulator), read by OpcuaSource."""

from __future__ import annotations

import asyncio

import pytest

from adapters.opcua.simulator import simulate
from adapters.opcua.source import OpcuaSource
from tests.helpers import free_port, until

from .common import device, supervised


async def test_simulate_serves_profile_until_stopped() -> None:
    port = free_port()
    cfg = device(port)
    stop = asyncio.Event()
    task = asyncio.create_task(simulate(cfg, port=str(port), stop=stop))
    try:
        async with supervised(OpcuaSource(cfg)) as got:
            await until(lambda: sum(r.stream == "weld1.current" for r in got) >= 5, what="changing current")
            line = next(r for r in got if r.stream == "weld1.thermal_line")
            assert line.value.shape == (32,) and 0 < float(line.value.max()) < 1000
            volts = [float(r.value) for r in got if r.stream == "weld1.voltage"]
            assert all(0.0 <= v < 60.0 for v in volts) and len(set(volts)) > 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_simulate_refuses_a_port_that_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="port"):
        await simulate(device(4840), port="/dev/ttyUSB0", stop=asyncio.Event())
