"""The Modbus polling source against real pymodbus servers (TCP on loopback, RTU over a pty pair)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import AdapterError, Reading, ScalarGroup
from adapters.loopback import free_port
from adapters.modbus import source as modbus_source
from adapters.modbus.client import _PymodbusLines, _reword_pymodbus_lines
from adapters.modbus.codec import NUMERIC_DTYPES, ORDERS, register_count
from adapters.modbus.config import ModbusTcpConfig
from adapters.modbus.simulator import SimulatedMachine, serve_simulated
from adapters.modbus.source import ModbusSource, decode_registers, next_poll
from adapters.supervise import check_sample
from tests.helpers import until as wait_for

from .common import Collector, one_cycle, rtu_line, tcp

# ------------------------------------------------------------------------------------------------ TCP


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


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_device(handler: Handler) -> AsyncIterator[int]:
    """A TCP device on loopback whose every byte the test writes (`handler`), for what a real server will not do on
    cue: stay silent, or answer at a chosen moment. Yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def zeros_answer(request: bytes) -> bytes:
    """The Modbus TCP answer, all registers 0, to a read request (its 12 bytes: MBAP header, function, start,
    count)."""
    count = struct.unpack(">H", request[10:12])[0]
    body = bytes([request[7], 2 * count]) + bytes(2 * count)
    return request[0:4] + struct.pack(">H", len(body) + 1) + request[6:7] + body


async def note_client_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gone: asyncio.Event) -> None:
    """End a device handler once the client closes its end (the end of the stream, or a reset: it closed with data
    unread), and set `gone` if it did."""
    try:
        closed = not await reader.read(1)
    except ConnectionError:
        closed = True
    if closed:
        gone.set()
    writer.close()


async def test_a_device_that_accepts_but_never_answers_times_out_and_is_reported() -> None:
    """The source relies on pymodbus's own request timeout (no outer guard): a silent device costs one timeout
    per request, its tags turn bad, and after three in a row the source raises for the supervisor to reconnect."""
    received = 0

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        while chunk := await reader.read(256):
            received += len(chunk)
        writer.close()

    batches: list[ScalarGroup] = []
    async with raw_device(swallow) as port:
        source = ModbusSource(tcp(port=port, timeout_s=0.2, tags=[{"name": "a", "address": 0}]))
        try:
            await source.open()
            # a hang guard only (pytest-timeout would take 120 s): the three timeouts take 0.6 s
            async with asyncio.timeout(30):
                with pytest.raises(AdapterError, match="not answering, 3 requests in a row"):
                    async for batch in source.batches():
                        batches.append(batch)
        finally:
            await source.close()
    assert received > 0  # the requests reached the device
    assert source.stats["timeouts"] == 3
    assert [[(r.stream, r.quality) for r in b] for b in batches] == [[("m.a", "bad")]] * 2


async def test_a_timeout_and_its_late_answer_are_logged_by_the_product_not_as_pymodbus_errors(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow device answers after the source gave up on the request. The timeout is the source's warning, naming
    the device; the late answer, which pymodbus ignores (its transaction is over), is `modbus_stray_answer` for the
    same device instead of pymodbus's "ERROR: ..." lines; the next request's answer is read as usual."""
    _reword_pymodbus_lines()
    monkeypatch.setattr(logging.getLogger("pymodbus.logging"), "filters", [_PymodbusLines()])  # a fresh burst
    caplog.set_level("DEBUG", logger="adapters")
    timed_out = asyncio.Event()

    async def late_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readexactly(12)
        await timed_out.wait()
        writer.write(zeros_answer(request))  # the first answer, after its timeout
        while request := await reader.read(12):
            writer.write(zeros_answer(request))
        writer.close()

    batches: list[ScalarGroup] = []
    async with raw_device(late_once) as port:
        source = ModbusSource(tcp(port=port, timeout_s=0.2, tags=[{"name": "a", "address": 0}]))
        try:
            await source.open()
            async with asyncio.timeout(30):  # a hang guard only
                async for batch in source.batches():
                    batches.append(batch)
                    timed_out.set()
                    if [r.quality for r in batch] == ["good"]:
                        break
        finally:
            await source.close()
    assert [[r.quality for r in b] for b in batches] == [["bad"], ["good"]]
    assert source.stats["timeouts"] == 1
    assert [r.getMessage() for r in caplog.records if r.name == "pymodbus.logging" and r.levelno >= logging.INFO] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("event=modbus_timeout ") and "device=m " in w and "slave=1" in w for w in warnings)
    assert "event=modbus_stray_answer count=1 suppressed=0 device=m kind=answer_after_timeout" in warnings


async def test_a_stop_mid_request_drops_the_connection_before_the_answer_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The service stops a source by cancelling it. A request in flight then still has its answer on the way, which
    pymodbus would log as "received pdu without a corresponding request" at every stop: the source drops the
    connection at once instead, so the answer never reaches pymodbus."""
    asked, answer, client_gone = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readexactly(12)
        asked.set()
        await answer.wait()
        writer.write(zeros_answer(request))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await note_client_close(reader, writer, client_gone)

    async with raw_device(slow) as port:
        source = ModbusSource(tcp(port=port, timeout_s=30.0, tags=[{"name": "a", "address": 0}]))
        try:
            await source.open()
            polling = asyncio.ensure_future(anext(source.batches()))
            async with asyncio.timeout(30):  # hang guards only
                await asyncio.wait([asyncio.ensure_future(asked.wait()), polling], return_when=asyncio.FIRST_COMPLETED)
                assert asked.is_set() and not polling.done()
                polling.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await polling
                answer.set()  # the answer leaves the device after the stop
                await client_gone.wait()
            await asyncio.sleep(0)  # one more turn of the loop for any late callback
        finally:
            await source.close()
    assert "without a corresponding request" not in caplog.text


async def test_an_abort_before_the_stop_leaves_an_answer_already_sent_unread(caplog: pytest.LogCaptureFixture) -> None:
    """The service calls `abort()` on every source before it cancels their tasks. An answer already in the socket
    when the stop comes is then never read; a cancel alone lets pymodbus read it while its request is being
    cancelled, and log it as an answer without a request. The device here answers and, in the same step, the test
    stops the source, as a stop arriving just after the answer left the device would."""
    client_gone = asyncio.Event()
    source: ModbusSource | None = None
    polling: asyncio.Future[Any] | None = None

    async def answer_then_stop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readexactly(12)
        writer.write(zeros_answer(request))  # in the client's socket
        assert source is not None and polling is not None
        source.abort()  # no await in between: the client has not read the answer
        polling.cancel()
        await note_client_close(reader, writer, client_gone)

    async with raw_device(answer_then_stop) as port:
        source = ModbusSource(tcp(port=port, timeout_s=30.0, tags=[{"name": "a", "address": 0}]))
        try:
            await source.open()
            polling = asyncio.ensure_future(anext(source.batches()))
            async with asyncio.timeout(30):  # a hang guard only
                with pytest.raises(asyncio.CancelledError):
                    await polling
                await client_gone.wait()
            await asyncio.sleep(0)  # one more turn of the loop for any late callback
        finally:
            await source.close()
    assert "without a corresponding request" not in caplog.text


@pytest.mark.parametrize("when", ["before the connect starts", "while the connection is being made"])
async def test_an_abort_while_connecting_closes_the_connection_that_comes_up(
    when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop (or a device reload) can abort a source that is still connecting, then cancels it. pymodbus ignores a
    close before its connection is up, so the source closes the connection once it is, and waits for the cancel
    rather than report an open source; nothing is left to the garbage collector."""
    client_gone = asyncio.Event()
    source: ModbusSource | None = None

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await note_client_close(reader, writer, client_gone)

    if when == "while the connection is being made":
        loop = asyncio.get_running_loop()
        create_connection = loop.create_connection

        async def abort_meanwhile(*args: Any, **kwargs: Any) -> Any:
            assert source is not None
            loop.call_soon(source.abort)  # lands while the connection is made: pymodbus's connect has begun
            return await create_connection(*args, **kwargs)

        monkeypatch.setattr(loop, "create_connection", abort_meanwhile)
    async with raw_device(accept) as port:
        source = ModbusSource(tcp(port=port, timeout_s=1.0, tags=[{"name": "a", "address": 0}]))
        opening = asyncio.ensure_future(source.open())
        if when == "before the connect starts":
            await asyncio.sleep(0)
            assert not opening.done()
            source.abort()
        async with asyncio.timeout(30):  # a hang guard only
            await client_gone.wait()
        assert not opening.done()  # waiting for the stop's cancel
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        with pytest.raises(AdapterError, match="after close"):
            await source.read_all()


async def test_open_fails_cleanly_without_a_server() -> None:
    source = ModbusSource(tcp(port=free_port(), timeout_s=0.2, tags=[{"name": "a", "address": 0}]))
    with pytest.raises(AdapterError):
        await source.open()
    await source.close()


async def test_stream_and_read_all_before_open_are_errors() -> None:
    source = ModbusSource(tcp(tags=[{"name": "a", "address": 0}]))
    with pytest.raises(AdapterError, match="before open"):
        await anext(source.stream())
    with pytest.raises(AdapterError, match="before open"):
        await source.read_all()


@contextlib.asynccontextmanager
async def opened(cfg: ModbusTcpConfig) -> AsyncIterator[tuple[SimulatedMachine, ModbusSource]]:
    """A simulated device serving `cfg` and a source opened on it, closed on the way out."""
    async with serve_simulated(cfg) as machine:
        source = ModbusSource(cfg.model_copy(update={"port": machine.port}))
        await source.open()
        try:
            yield machine, source
        finally:
            await source.close()


async def test_polling_after_an_abort_waits_for_the_stop_s_cancel() -> None:
    """A stop aborts the connection, then cancels the polling. A poll that comes in between (the next request of the
    cycle) waits for that cancel: failing there would be reported as an outage, a reconnect counted and a warning
    logged, at every such stop."""
    cfg = tcp(tags=[{"name": "a", "address": 0}, {"name": "c", "address": 400}])  # two requests a cycle
    async with opened(cfg) as (_, source):
        batches = source.batches()
        first = await anext(batches)
        source.abort()
        polling = asyncio.ensure_future(anext(batches))
        for _ in range(20):  # loop turns, not time: a failing poll would be done after the first
            await asyncio.sleep(0)
        assert not polling.done()
        polling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await polling
        with pytest.raises(AdapterError, match="after close"):
            await source.read_all()
    assert [r.stream for r in first] == ["m.a"]


async def test_read_all_polls_every_request_once() -> None:
    cfg = tcp(
        poll_groups={"fast": 100}, tags=[{"name": "a", "address": 0}, {"name": "b", "address": 50, "group": "fast"}]
    )
    async with opened(cfg) as (machine, source):
        readings = await source.read_all()
    assert {r.stream: r.value.item() for r in readings} == machine.values
    assert source.stats["reads"] == source.requests_per_cycle == 2  # two poll groups, one request each


async def test_batches_are_the_stream_s_readings_one_list_per_request() -> None:
    """The service takes `batches()`; `stream()` must yield the same readings in the same order."""
    cfg = tcp(
        tags=[
            {"name": "a", "address": 0},
            {"name": "b", "address": 1, "dtype": "float32", "byte_order": "CDAB"},
            {"name": "c", "address": 400},  # far away: a request of its own
        ]
    )
    async with opened(cfg) as (machine, source):
        batches = source.batches()
        groups = [await anext(batches) for _ in range(source.requests_per_cycle)]
        await batches.aclose()
        stream = source.stream()
        flat = [await anext(stream) for _ in range(3)]
        await stream.aclose()
    assert [[r.stream for r in g] for g in groups] == [["m.a", "m.b"], ["m.c"]]
    assert all(len({r.t_ns for r in g}) == 1 for g in groups)  # one response, one time stamp
    assert [r.stream for r in flat] == ["m.a", "m.b", "m.c"]
    assert {r.stream: r.value.item() for g in groups for r in g} == pytest.approx(machine.values)
    assert {r.stream: r.value.item() for r in flat} == pytest.approx(machine.values)


async def test_a_stall_longer_than_two_poll_periods_is_counted_and_logged_as_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`late_reads`: a request answered more than two poll periods after its previous answer. The stall here is
    the whole process blocking (the source, and the simulated device that shares its event loop), as a machine
    that freezes would."""
    cfg = tcp(poll_interval_ms=50, tags=[{"name": "a", "address": 0}])
    async with opened(cfg) as (_, source):
        batches = source.batches()
        for _ in range(3):
            await anext(batches)
        first = source.stats["late_reads"]
        source._late.interval_s = 0.0  # every late read logged, should a busy machine have made one already
        time.sleep(0.5)  # noqa: ASYNC251 (the fault injected: the event loop freezes 500 ms, ten poll periods)
        await anext(batches)
        await anext(batches)
        await batches.aclose()
        late = source.stats["late_reads"]
        assert late >= first + 1
        time.sleep(0.5)  # noqa: ASYNC251 (as above)
        await source.read_all()  # one-shot reads are not paced: never late
        assert source.stats["late_reads"] == late
    assert "event=modbus_data_late" in caplog.text and "period_ms=50" in caplog.text
    gaps = [int(g) for g in re.findall(r"gap_ms=(\d+)", caplog.text)]
    assert max(gaps) >= 500


def test_error_counters_exist_at_zero_before_the_first_poll() -> None:
    """Exported from the start, so a Prometheus `increase()` sees the first late read or overrun (a series that
    appears with the value 1 has no step from 0)."""
    stats = ModbusSource(tcp(tags=[{"name": "a", "address": 0}])).stats
    assert {k: stats[k] for k in stats if k in ("late_reads", "overruns", "timeouts", "modbus_exceptions")} == {
        "late_reads": 0,
        "overruns": 0,
        "timeouts": 0,
        "modbus_exceptions": 0,
    }


async def test_a_clock_step_is_not_late_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readings carry wall-clock time stamps, which NTP may step at boot; lateness is timed on the monotonic
    clock, so a step of a minute counts nothing."""
    cfg = tcp(poll_interval_ms=200, tags=[{"name": "a", "address": 0}])
    async with opened(cfg) as (_, source):
        batches = source.batches()
        before = [await anext(batches) for _ in range(2)]
        step = 60 * 10**9
        monkeypatch.setattr(modbus_source, "now_ns", lambda: time.time_ns() + step)
        after = [await anext(batches) for _ in range(3)]
        await batches.aclose()
    assert after[0][0].t_ns - before[-1][0].t_ns >= step  # the readings' clock did step
    assert source.stats["late_reads"] == 0


# ------------------------------------------------------------------------------------------------ RTU


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
    about a tenth of the 50 ms poll rate; the bound below (40 %) is far from both. The two 2 s windows measure
    a rate, so they are timed, not polled for.
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


# ------------------------------------------------------------------------------------------------ fuzz


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_any_registers_decode_to_sane_readings_or_are_counted(data: st.DataObject) -> None:
    """Every dtype and order over arbitrary register words (NaN and Inf bit patterns included): the guarded
    decode never raises; a non-finite float is kept with quality bad, never passed on as a good value."""
    source = ModbusSource(every_dtype_and_order())
    for group in source._groups:
        for read in group.reads:
            req = read.request
            if req.table in ("coil", "discrete"):
                raw = np.asarray(data.draw(st.lists(st.booleans(), min_size=req.count, max_size=req.count)))
            else:
                words = st.lists(st.integers(0, 0xFFFF), min_size=req.count, max_size=req.count)
                raw = np.asarray(data.draw(words), dtype=np.uint16)
            out = source._guard(decode_registers, read, raw, 1_700_000_000_000_000_000)
            assert out is not None, source.stats
            assert len(out) == len(read.streams)
            # the names the router takes without reading the samples, the same for a bad response
            assert isinstance(out, ScalarGroup) and list(out.streams) == [r.stream for r in out]
            assert [r.stream for r in source._bad(read, 1)] == list(out.streams)
            for r in out:
                assert check_sample(r) is r
                if r.quality == "good" and r.value.dtype.kind == "f":
                    assert np.isfinite(r.value).all()
    assert source.stats["malformed"] == 0


def test_a_response_of_interleaved_dtypes_names_each_reading_by_its_own_tag() -> None:
    """A response decodes set by set (each dtype and order at once), so its readings leave out of address order;
    the names the group carries for the router (`ScalarGroup.streams`) must follow the readings, not the map."""
    tags = [
        {"name": "a", "address": 0, "dtype": "float32"},
        {"name": "b", "address": 2, "dtype": "int16"},
        {"name": "c", "address": 3, "dtype": "float32"},
        {"name": "d", "address": 5, "dtype": "int16"},
    ]
    source = ModbusSource(tcp(tags=tags))
    (read,) = [read for group in source._groups for read in group.reads]
    words = struct.unpack(">6H", struct.pack(">fhfh", 1.5, 7, -2.25, -3))
    out = decode_registers(read, np.array(words, dtype=np.uint16), 1)
    assert [r.stream.rsplit(".", 1)[1] for r in out] == ["a", "c", "b", "d"]  # the float32 set, then the int16s
    assert list(out.streams) == [r.stream for r in out]
    bad = source._bad(read, 2)  # a failed request lists its tags in the same order, so the names hold for it too
    assert [r.stream for r in bad] == list(bad.streams) == list(out.streams)
    assert all(r.quality == "bad" for r in bad)
    assert {r.stream.rsplit(".", 1)[1]: float(r.value) for r in out} == {"a": 1.5, "b": 7, "c": -2.25, "d": -3}


# ------------------------------------------------------------------------------------------------ pacing


def test_a_poll_within_its_period_keeps_the_fixed_rate() -> None:
    assert next_poll(10.0, 0.5, 10.2) == (10.5, False)
    assert next_poll(10.0, 0.5, 10.5) == (10.5, False)


def test_an_overrun_polls_again_at_once_without_skipping_or_bursting() -> None:
    # the poll due at 10.0 ended at 10.6: the next starts at 10.6 (data at most one poll old), not at 11.0
    due, overran = next_poll(10.0, 0.5, 10.6)
    assert (due, overran) == (10.6, True)
    # three periods behind: one poll now and the period counted from it, not three polls back to back
    assert next_poll(10.0, 0.5, 11.7) == (11.7, True)
    assert next_poll(11.7, 0.5, 11.9) == (12.2, False)
