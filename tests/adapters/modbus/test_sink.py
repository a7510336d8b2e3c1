"""The Modbus write-back sink against a real pymodbus server holding the PLC profile."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from adapters.base import DeliveryError
from adapters.modbus.config import AddressRange, ModbusWriteConfig
from adapters.modbus.simulator import SimulatedMachine, serve_simulated
from adapters.modbus.sink import ModbusWriteSink, WriteRefusedError
from tests.helpers import until

from .common import plc_profile, result, sink_config, write_config


async def coils_on(machine: SimulatedMachine, address: int, count: int) -> list[int]:
    return [i for i, on in enumerate(await machine.read("coil", address, count)) if on]


async def test_allowed_writes_land_and_pulses_end() -> None:
    async with serve_simulated(plc_profile()) as machine:
        assert isinstance(machine.port, int)
        sink = ModbusWriteSink(sink_config(machine.port))
        await sink.open()
        try:
            await sink.deliver(result("alarm", eject_channels=[1, 3], anomaly_score=0.734, temperature=-31.5))
            assert await coils_on(machine, 100, 16) == [1, 3]
            assert (await machine.read("holding", 20))[0] == 734
            assert (await machine.read("coil", 5))[0] is True
            regs = await machine.read("holding", 22, 2)
            assert np.array(regs[::-1], dtype=">u2").tobytes() == struct.pack(">f", -31.5)  # CDAB on the wire
            assert sink.stats["writes"] == 4  # the ejector block, the score, the alarm coil, the temperature

            await until(lambda: sink.stats["writes"] == 5, what="the pulse-end write")
            assert await coils_on(machine, 100, 16) == []

            await sink.deliver(result("ok", anomaly_score=99.0))  # clipped to 65535
            assert (await machine.read("coil", 5))[0] is False
            assert (await machine.read("holding", 20))[0] == 65535
        finally:
            await sink.close()
    assert sink.stats["clipped"] == 1 and sink.stats["delivered"] == 2
    lat = sink.latency_ms()
    assert lat["n"] == 2 and 0 < lat["p50"] <= lat["p99"]


async def test_fields_come_from_the_results_wire_form() -> None:
    """An action may name a head field (`score`, `decision`) as well as a declared value or detail."""
    async with serve_simulated(plc_profile()) as machine:
        assert isinstance(machine.port, int)
        cfg = write_config(
            machine.port,
            writable=[{"table": "holding", "start": 20, "end": 29}],
            actions=[{"field": "score", "table": "holding", "address": 24, "scale": 100}],
        )
        sink = ModbusWriteSink(cfg)
        await sink.open()
        try:
            await sink.deliver(result("ok").with_(score=0.42))
            assert (await machine.read("holding", 24))[0] == 42
        finally:
            await sink.close()
    assert sink.stats["missing_field"] == 0


async def test_forbidden_writes_are_refused_at_runtime() -> None:
    async with serve_simulated(plc_profile()) as machine:
        assert isinstance(machine.port, int)
        sink = ModbusWriteSink(sink_config(machine.port))
        await sink.open()
        try:
            with pytest.raises(WriteRefusedError):
                await sink.deliver(result(eject_channels=[16]))  # coil 116: outside the action and the allow-list
            # a config that slipped past validation is still held to its allow-list
            good = sink_config(machine.port)
            forged = ModbusWriteConfig.model_construct(
                **{**dict(good), "writable": [good.writable[0]]}  # only coil 5 allowed
            )
            rogue = ModbusWriteSink(forged)
            await rogue.open()
            with pytest.raises(WriteRefusedError):
                await rogue.deliver(result("alarm", anomaly_score=0.5))
            await rogue.close()
        finally:
            await sink.close()
        assert (await machine.read("coil", 100, 16)) == [False] * 16
        assert (await machine.read("holding", 20))[0] == 0
        assert (await machine.read("coil", 5))[0] is False  # nothing of a refused result is written
    assert sink.stats["refused"] == 1 and rogue.stats["refused"] == 1 and rogue.stats["writes"] == 0


async def test_a_forbidden_range_is_refused_at_runtime_even_inside_the_allow_list() -> None:
    """The sink's `forbidden` list wins over `writable`: validation refuses such an action, and a config that
    slipped past validation writes nothing there either (the PLC's program area stays untouched)."""
    with pytest.raises(ValueError, match="not writable"):
        sink_config(502, forbidden=[{"table": "holding", "start": 20, "end": 29}])
    async with serve_simulated(plc_profile()) as machine:
        assert isinstance(machine.port, int)
        good = sink_config(machine.port)
        forged = good.model_copy(update={"forbidden": [AddressRange(table="holding", start=20, end=29)]})
        sink = ModbusWriteSink(forged)
        await sink.open()
        try:
            with pytest.raises(WriteRefusedError):
                await sink.deliver(result(anomaly_score=0.5))
        finally:
            await sink.close()
        assert (await machine.read("holding", 20))[0] == 0
    assert sink.stats["refused"] == 1 and sink.stats["writes"] == 0


async def test_single_pulse_ends_and_device_refusal_is_a_delivery_error() -> None:
    async with serve_simulated(plc_profile()) as machine:
        assert isinstance(machine.port, int)
        cfg = write_config(
            machine.port,
            writable=[{"table": "coil", "start": 7}, {"table": "holding", "start": 900}],
            actions=[
                {"field": "reject", "table": "coil", "address": 7, "mode": "pulse", "pulse_ms": 30},
                {"field": "code", "table": "holding", "address": 900},  # the PLC has no register 900
            ],
        )
        sink = ModbusWriteSink(cfg)
        await sink.open()
        try:
            await sink.deliver(result(reject=True))
            assert (await machine.read("coil", 7))[0] is True
            await until(lambda: sink.stats["writes"] == 2, what="the pulse-end write")
            assert (await machine.read("coil", 7))[0] is False
            await sink.deliver(result(reject=False))
            assert (await machine.read("coil", 7))[0] is False
            with pytest.raises(DeliveryError):
                await sink.deliver(result(code=3))
        finally:
            await sink.close()
    assert sink.stats["write_errors"] == 1 and sink.stats["missing_field"] == 3


async def test_deliver_before_open_is_a_delivery_error() -> None:
    sink = ModbusWriteSink(sink_config(502))
    with pytest.raises(DeliveryError, match="not open"):
        await sink.deliver(result("alarm"))
    assert sink.stats["delivered"] == 0
