"""Modbus source, write sink, probe and simulator against real pymodbus servers (TCP loopback, RTU over a pty pair)."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from adapters.base import AdapterError, Backoff, DeliveryError, Reading, Sample, Sink, Source, free_port, supervise
from adapters.modbus import (
    ModbusRtuConfig,
    ModbusSource,
    ModbusTcpConfig,
    ModbusWriteConfig,
    ModbusWriteSink,
    SimulatedMachine,
    WriteRefusedError,
    match_orders,
    plan_report,
    probe_order,
    serve_simulated,
    simulate,
)
from adapters.modbus_codec import NUMERIC_DTYPES, ORDERS, register_count
from tests.helpers import until as wait_for

DEVICES = Path(__file__).resolve().parents[2] / "configs" / "devices"


def tcp(**fields: Any) -> ModbusTcpConfig:
    return ModbusTcpConfig.model_validate({"kind": "modbus-tcp", "id": "m", **fields})


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
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


# ------------------------------------------------------------------------------------------------ config


def test_config_rejects_inconsistent_tags() -> None:
    bad_tags: list[dict[str, Any]] = [
        {"name": "a", "table": "coil", "address": 0, "dtype": "uint16"},
        {"name": "a", "table": "holding", "address": 0, "dtype": "bool"},
        {"name": "a", "address": 0, "dtype": "bit"},
        {"name": "a", "address": 0, "dtype": "string"},
        {"name": "a", "address": 65535, "dtype": "float32"},
        {"name": "a", "address": 0, "dtype": "bit", "bit": 1, "scale": 2},
        {"name": "a", "address": 0, "poll_interval_ms": 100, "group": "fast"},
        {"name": "a b", "address": 0},
        {"name": "a", "address": 0, "byte_order": "ACBD"},
        {"name": "a", "address": 0, "colour": "red"},
    ]
    for tag in bad_tags:
        with pytest.raises(ValidationError):
            tcp(tags=[tag], poll_groups={"fast": 100})
    with pytest.raises(ValidationError, match="duplicate"):
        tcp(tags=[{"name": "a", "address": 0}, {"name": "a", "address": 1}])
    with pytest.raises(ValidationError, match="unknown poll group"):
        tcp(tags=[{"name": "a", "address": 0, "group": "slow"}])
    with pytest.raises(ValidationError, match="forbidden"):
        tcp(tags=[{"name": "a", "address": 2, "dtype": "float32"}], forbidden=[{"table": "holding", "start": 3}])
    with pytest.raises(ValidationError, match="overlaps a forbidden"):
        tcp(writable=[{"table": "coil", "start": 0, "end": 9}], forbidden=[{"table": "coil", "start": 5}])


def test_rtu_line_with_several_slaves_needs_names() -> None:
    tags = [{"name": "speed", "address": 0}]
    with pytest.raises(ValidationError, match="name"):
        ModbusRtuConfig.model_validate(
            {"kind": "modbus-rtu", "tags": tags, "devices": [{"device_id": 1}, {"device_id": 2}]}
        )
    with pytest.raises(ValidationError, match="duplicate"):
        ModbusRtuConfig.model_validate(
            {
                "kind": "modbus-rtu",
                "tags": tags,
                "devices": [{"device_id": 1, "name": "a"}, {"device_id": 1, "name": "b"}],
            }
        )
    with pytest.raises(ValidationError, match="no tags"):
        ModbusRtuConfig.model_validate({"kind": "modbus-rtu"})
    with pytest.raises(ValidationError, match="at least one tag"):
        ModbusTcpConfig.model_validate({"kind": "modbus-tcp"})
    cfg = ModbusRtuConfig.model_validate(
        {"kind": "modbus-rtu", "id": "line1", "tags": tags, "devices": [{"device_id": 3, "name": "fan"}]}
    )
    assert cfg.slaves()[0][:2] == (3, "line1.fan")


def test_profiles_validate_and_plan() -> None:
    drive = ModbusRtuConfig.model_validate(yaml.safe_load((DEVICES / "old_drive_rtu.yaml").read_text()))
    plc = ModbusTcpConfig.model_validate(yaml.safe_load((DEVICES / "plc_tcp.yaml").read_text()))
    assert any(t.byte_order == "CDAB" and t.dtype == "float32" for t in drive.tags)
    assert any(t.dtype == "int16" and t.scale == 0.1 for t in drive.tags)
    assert any(t.dtype == "bit" for t in plc.tags) and any(t.dtype == "int32" for t in plc.tags)
    for cfg in (drive, plc):
        report = plan_report(cfg)
        assert "never read" in report
        n_requests = sum(len(g.reads) for g in ModbusSource(cfg)._groups)
        assert n_requests < len(cfg.tags)


def test_source_and_sink_satisfy_the_protocols() -> None:
    cfg = tcp(tags=[{"name": "a", "address": 0}])
    assert isinstance(ModbusSource(cfg), Source)
    sink_cfg = ModbusWriteConfig.model_validate(
        {
            "kind": "modbus-write",
            "writable": [{"table": "coil", "start": 5}],
            "actions": [{"field": "decision", "equals": "alarm", "table": "coil", "address": 5}],
        }
    )
    assert isinstance(ModbusWriteSink(sink_cfg), Sink)


# ------------------------------------------------------------------------------------------------ TCP source


def every_dtype_and_order() -> ModbusTcpConfig:
    tags: list[dict[str, Any]] = []
    address = 0
    for dtype in sorted(NUMERIC_DTYPES):
        for order in ORDERS:
            for scaled in (False, True):
                tag: dict[str, Any] = {"name": f"{dtype}_{order}_{int(scaled)}", "address": address, "dtype": dtype}
                tag |= {"byte_order": order, "unit": "bar"}
                if scaled:
                    tag |= {"scale": 0.01, "offset": -5.0}
                tags.append(tag)
                address += register_count(dtype)
    tags += [
        {"name": "status_b0", "address": 400, "dtype": "bit", "bit": 0},
        {"name": "status_b9", "address": 400, "dtype": "bit", "bit": 9},
        {"name": "serial", "address": 401, "dtype": "string", "length": 5, "byte_order": "BADC"},
        {"name": "run", "table": "coil", "address": 3, "dtype": "bool"},
        {"name": "door", "table": "discrete", "address": 7, "dtype": "bool"},
        {"name": "temp", "table": "input", "address": 9, "dtype": "int16", "scale": 0.1, "unit": "degC"},
    ]
    return tcp(tags=tags)


async def test_every_dtype_and_order_reads_what_the_server_holds() -> None:
    cfg = every_dtype_and_order()
    async with serve_simulated(cfg) as machine:
        machine.set("m.status_b9", True)
        machine.set("m.temp", -27.3)  # a cold hall
        await machine.refresh()
        source = ModbusSource(cfg.model_copy(update={"port": machine.port}))
        await source.open()
        try:
            readings = await one_cycle(source, len(cfg.tags))
        finally:
            await source.close()
    assert set(readings) == set(machine.values)
    for stream, reading in readings.items():
        assert reading.quality == "good", stream
        assert reading.value.shape == ()
        assert reading.value.item() == machine.values[stream], stream
    assert readings["m.temp"].value.item() == pytest.approx(-27.3)
    assert readings["m.status_b9"].value.item() is True
    assert readings["m.float32_CDAB_0"].value.dtype == np.float32
    assert readings["m.float32_CDAB_1"].value.dtype == np.float64
    assert readings["m.temp"].unit == "degC"
    assert source.stats["reads"] == source.requests_per_cycle < len(cfg.tags)


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


async def test_exception_response_gives_bad_quality_and_polling_goes_on() -> None:
    served = tcp(tags=[{"name": "a", "address": 0}, {"name": "b", "address": 1, "dtype": "int16"}])
    async with serve_simulated(served) as machine:
        polled = tcp(
            port=machine.port,
            poll_interval_ms=20,
            tags=[{"name": "a", "address": 0}, {"name": "missing", "address": 500, "dtype": "float32"}],
        )
        source = ModbusSource(polled)
        await source.open()
        readings: list[Reading] = []

        async def collect() -> None:
            async for sample in source.stream():
                assert isinstance(sample, Reading)
                readings.append(sample)
                if len(readings) >= 10:
                    return

        await asyncio.wait_for(collect(), 20)
        await source.close()
    missing = [r for r in readings if r.stream == "m.missing"]
    good = [r for r in readings if r.stream == "m.a"]
    assert missing and all(r.quality == "bad" and np.isnan(r.value) for r in missing)
    assert good and all(r.quality == "good" and r.value.item() == machine.values["m.a"] for r in good)
    assert source.stats["modbus_exceptions"] == len(missing)


async def test_forbidden_registers_are_never_read() -> None:
    """The simulator faults any read touching the forbidden register, so one bad read would show as bad quality."""
    cfg = tcp(
        max_gap_registers=20,
        forbidden=[{"table": "holding", "start": 5, "end": 6}],
        tags=[{"name": "a", "address": 0, "dtype": "float32"}, {"name": "b", "address": 10, "dtype": "float32"}],
    )
    async with serve_simulated(cfg) as machine:
        source = ModbusSource(cfg.model_copy(update={"port": machine.port}))
        await source.open()
        readings = await one_cycle(source, 2)
        await source.close()
        unsafe = cfg.model_copy(update={"port": machine.port, "forbidden": []})
        probe = ModbusSource(unsafe)
        await probe.open()
        unsafe_readings = await one_cycle(probe, 2)
        await probe.close()
    assert source.requests_per_cycle == 2
    assert all(r.quality == "good" for r in readings.values())
    assert probe.requests_per_cycle == 1  # merged through the hole ...
    assert all(r.quality == "bad" for r in unsafe_readings.values())  # ... which the device refuses


async def test_reconnects_after_the_server_restarts() -> None:
    port = free_port()
    cfg = tcp(port=port, poll_interval_ms=20, timeout_s=0.3, tags=[{"name": "a", "address": 0}])
    machine = SimulatedMachine(cfg, vary=False)
    await machine.start(port)
    source = ModbusSource(cfg)
    collector = Collector(source)
    try:
        await wait_for(lambda: collector.good("m.a") >= 3)
        await machine.stop()
        await wait_for(lambda: source.stats["reconnects"] >= 1)
        before = collector.good("m.a")
        machine = SimulatedMachine(cfg, vary=False)
        await machine.start(port)
        await wait_for(lambda: collector.good("m.a") >= before + 3)
    finally:
        await collector.stop()
        await machine.stop()
    assert source.stats["reconnects"] >= 1


async def test_open_fails_cleanly_without_a_server() -> None:
    source = ModbusSource(tcp(port=free_port(), timeout_s=0.2, tags=[{"name": "a", "address": 0}]))
    with pytest.raises(AdapterError):
        await source.open()
    await source.close()


# ------------------------------------------------------------------------------------------------ RTU


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two connected pseudo-terminals (a virtual RS-485 line): the device end and the client end."""
    socat = shutil.which("socat") or "/usr/bin/socat"
    a, b = tmp_path / "dev", tmp_path / "client"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (a.exists() and b.exists()):
        assert proc.poll() is None, "socat exited"
        assert time.monotonic() < deadline, "socat did not create the pty pair"
        time.sleep(0.02)
    try:
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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


async def test_rtu_reads_three_slaves_over_a_serial_pair(serial_pair: tuple[str, str]) -> None:
    device_end, client_end = serial_pair
    cfg = rtu_line(client_end)
    async with serve_simulated(cfg, port=device_end) as machine:
        for dev in (1, 2, 3):
            machine.set(f"line1.d{dev}.speed", 100.0 * dev)
        await machine.refresh()
        source = ModbusSource(cfg)
        await source.open()
        try:
            readings = await one_cycle(source, 6)
        finally:
            await source.close()
    assert {s: r.value.item() for s, r in readings.items()} == machine.values
    assert readings["line1.d3.speed"].value.item() == pytest.approx(300.0)


async def test_dead_slave_does_not_stall_the_line(serial_pair: tuple[str, str]) -> None:
    """Slave 3 stops answering: slaves 1 and 2 keep (most of) their poll rate, slave 3 reads bad, then recovers.

    Without parking the silent slave every cycle would wait out its 0.5 s timeout, cutting the others' rate to
    about a tenth of the 50 ms poll rate; the bound below (40 %) is far from both.
    """
    device_end, client_end = serial_pair
    cfg = rtu_line(client_end)
    async with serve_simulated(cfg, port=device_end) as machine:
        source = ModbusSource(cfg)
        collector = Collector(source)
        try:
            await wait_for(lambda: collector.good("line1.d3.speed") >= 2)
            start = collector.good("line1.d1.speed")
            await asyncio.sleep(2.0)
            healthy = collector.good("line1.d1.speed") - start

            machine.silence(3)
            mark = len(collector.readings)
            start1, start2 = collector.good("line1.d1.speed"), collector.good("line1.d2.speed")
            await asyncio.sleep(2.0)
            degraded1 = collector.good("line1.d1.speed") - start1
            degraded2 = collector.good("line1.d2.speed") - start2
            dead = [r for r in collector.readings[mark:] if r.stream.startswith("line1.d3.")]
            during = collector.good("line1.d3.speed")

            machine.silence(3, silent=False)
            await wait_for(lambda: collector.good("line1.d3.speed") > during)
        finally:
            await collector.stop()
    assert healthy >= 5
    assert degraded1 >= 0.4 * healthy and degraded2 >= 0.4 * healthy, (healthy, degraded1, degraded2)
    assert dead and all(r.quality == "bad" for r in dead[2:])
    assert source.stats["timeouts"] >= 1 and source.stats["skipped_dead"] >= 1
    assert source.stats["reconnects"] == 0  # a silent slave is not a broken line


# ------------------------------------------------------------------------------------------------ write-back


def plc_profile(**fields: Any) -> ModbusTcpConfig:
    data = yaml.safe_load((DEVICES / "plc_tcp.yaml").read_text())
    return ModbusTcpConfig.model_validate({**data, "id": "plc", **fields})


def sink_config(port: int, **fields: Any) -> ModbusWriteConfig:
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


def test_write_config_refuses_addresses_outside_the_allow_list() -> None:
    with pytest.raises(ValidationError, match="not writable"):
        sink_config(502, writable=[{"table": "coil", "start": 100, "end": 110}])  # channels 11..15 not allowed
    with pytest.raises(ValidationError, match="not writable"):
        sink_config(
            502, writable=[{"table": "holding", "start": 20, "end": 22}, {"table": "coil", "start": 5, "end": 115}]
        )
    with pytest.raises(ValidationError, match="coils only"):
        ModbusWriteConfig.model_validate(
            {
                "kind": "modbus-write",
                "writable": [{"table": "holding", "start": 0}],
                "actions": [{"field": "x", "table": "holding", "address": 0, "mode": "pulse"}],
            }
        )


async def test_allowed_writes_land_and_pulses_end() -> None:
    async with serve_simulated(plc_profile()) as machine:
        assert isinstance(machine.port, int)
        sink = ModbusWriteSink(sink_config(machine.port))
        await sink.open()
        try:
            await sink.deliver(
                {"eject_channels": [1, 3], "anomaly_score": 0.734, "decision": "alarm", "temperature": -31.5}
            )
            coils = await machine.read("coil", 100, 16)
            assert [i for i, on in enumerate(coils) if on] == [1, 3]
            assert (await machine.read("holding", 20))[0] == 734
            assert (await machine.read("coil", 5))[0] is True
            regs = await machine.read("holding", 22, 2)
            assert np.array(regs[::-1], dtype=">u2").tobytes() == struct.pack(">f", -31.5)  # CDAB on the wire

            async def all_off() -> bool:
                return not any(await machine.read("coil", 100, 16))

            deadline = time.monotonic() + 10
            while not await all_off():
                assert time.monotonic() < deadline, "pulse never ended"
                await asyncio.sleep(0.02)

            await sink.deliver({"decision": "ok", "anomaly_score": 99.0})  # clipped to 65535
            assert (await machine.read("coil", 5))[0] is False
            assert (await machine.read("holding", 20))[0] == 65535
        finally:
            await sink.close()
    assert sink.stats["clipped"] == 1 and sink.stats["delivered"] == 2
    lat = sink.latency_ms()
    assert lat["n"] == 2 and 0 < lat["p50"] <= lat["p99"]


async def test_forbidden_writes_are_refused_at_runtime() -> None:
    async with serve_simulated(plc_profile()) as machine:
        assert isinstance(machine.port, int)
        sink = ModbusWriteSink(sink_config(machine.port))
        await sink.open()
        try:
            with pytest.raises(WriteRefusedError):
                await sink.deliver({"eject_channels": [16]})  # coil 116: outside the action and the allow-list
            # a config that slipped past validation is still held to its allow-list
            good = sink_config(machine.port)
            forged = ModbusWriteConfig.model_construct(
                **{**dict(good), "writable": [good.writable[0]]}  # only coil 5 allowed
            )
            rogue = ModbusWriteSink(forged)
            await rogue.open()
            with pytest.raises(WriteRefusedError):
                await rogue.deliver({"anomaly_score": 0.5, "decision": "alarm"})
            await rogue.close()
        finally:
            await sink.close()
        assert (await machine.read("coil", 100, 16)) == [False] * 16
        assert (await machine.read("holding", 20))[0] == 0
        assert (await machine.read("coil", 5))[0] is False  # nothing of a refused result is written
    assert sink.stats["refused"] == 1 and rogue.stats["refused"] == 1 and rogue.stats["writes"] == 0


async def test_single_pulse_ends_and_device_refusal_is_a_delivery_error() -> None:
    async with serve_simulated(plc_profile()) as machine:
        assert isinstance(machine.port, int)
        cfg = ModbusWriteConfig.model_validate(
            {
                "kind": "modbus-write",
                "connection": {"transport": "tcp", "port": machine.port},
                "writable": [{"table": "coil", "start": 7}, {"table": "holding", "start": 900}],
                "actions": [
                    {"field": "reject", "table": "coil", "address": 7, "mode": "pulse", "pulse_ms": 30},
                    {"field": "code", "table": "holding", "address": 900},  # the PLC has no register 900
                ],
            }
        )
        sink = ModbusWriteSink(cfg)
        await sink.open()
        try:
            await sink.deliver({"reject": True})
            assert (await machine.read("coil", 7))[0] is True
            deadline = time.monotonic() + 10
            while (await machine.read("coil", 7))[0]:
                assert time.monotonic() < deadline, "pulse never ended"
                await asyncio.sleep(0.02)
            await sink.deliver({"reject": False})
            assert (await machine.read("coil", 7))[0] is False
            with pytest.raises(DeliveryError):
                await sink.deliver({"code": 3})
        finally:
            await sink.close()
    assert sink.stats["write_errors"] == 1 and sink.stats["missing_field"] == 3


# ------------------------------------------------------------------------------------------------ probe, simulate


def test_match_orders_finds_scaled_integers_and_off_by_one_addresses() -> None:
    regs = np.array([0, 500, 0, 7], dtype=np.uint16)  # an old drive: 50.0 Hz stored as 500 (x0.1)
    lines = match_orders(regs, 0, 1, "holding", 50.0, 1e-3)
    assert "address: 1, dtype: int16, byte_order: ABCD, scale: 0.1}" in lines[0]
    exact = [line for line in lines if "address: 1," in line]
    assert len(exact) < len(lines) and lines[: len(exact)] == exact  # exact address before neighbours
    # the manual counted from 1: asking for register 2 still finds the value at 1, ranked after exact hits
    shifted = match_orders(regs, 0, 2, "holding", 50.0, 1e-3)
    assert shifted and all("address: 1" in line for line in shifted)
    assert match_orders(regs, 0, 1, "holding", 1234.5, 1e-3) == []


async def test_probe_order_finds_a_cdab_float() -> None:
    cfg = tcp(
        tags=[
            {"name": "flow", "address": 10, "dtype": "float32", "byte_order": "CDAB"},
            {"name": "other", "address": 12, "dtype": "uint16"},
            {"name": "x", "address": 8, "dtype": "uint16"},
        ]
    )
    async with serve_simulated(cfg) as machine:
        machine.set("m.flow", 123.456)
        await machine.refresh()
        assert isinstance(machine.port, int)
        lines = await probe_order("127.0.0.1", machine.port, 1, "holding", 10, 123.456)
        none = await probe_order("127.0.0.1", machine.port, 1, "holding", 10, 98765.4)
    assert lines and "address: 10, dtype: float32, byte_order: CDAB}" in lines[0]
    assert not any("float32, byte_order: ABCD" in line and "address: 10" in line for line in lines)
    tag = yaml.safe_load(lines[0].split("#")[0])[0]
    assert tcp(tags=[tag]).tags[0].byte_order == "CDAB"  # pastes straight into a profile
    assert none == []


async def test_simulate_serves_a_profile_until_stopped() -> None:
    port = free_port()
    cfg = plc_profile(port=port)
    stop = asyncio.Event()
    task = asyncio.create_task(simulate(cfg, port=port, stop=stop))
    source = ModbusSource(cfg)
    deadline = time.monotonic() + 20
    while True:
        try:
            await source.open()
            break
        except AdapterError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    readings = await one_cycle(source, len(cfg.tags))
    await source.close()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert all(r.quality == "good" for r in readings.values())
    assert readings["plc.parts_count"].value.dtype == np.int32
    assert isinstance(readings["plc.recipe"].value.item(), str)


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
