"""The array responses decode every payload as pymodbus's own responses do and refuse what they refuse; pymodbus's log
lines on timeouts and stray answers become the product's, naming the device."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from adapters.modbus.client import (
    _DEVICE,
    _array_responses,
    _PymodbusLines,
    _reword_pymodbus_lines,
    decode_registers_as_arrays,
    tcp_client,
)

HOLDING, INPUT, COILS, DISCRETE = _array_responses()


@given(st.lists(st.integers(0, 0xFFFF), max_size=125), st.binary(max_size=3))
def test_registers_decode_as_pymodbus_does(registers: list[int], tail: bytes) -> None:
    # trailing bytes past the byte count are ignored by both
    body = bytes([2 * len(registers)]) + b"".join(r.to_bytes(2, "big") for r in registers) + tail
    for ours, theirs in ((HOLDING(), ReadHoldingRegistersResponse()), (INPUT(), ReadInputRegistersResponse())):
        assert ours.function_code == theirs.function_code
        ours.decode(body)
        theirs.decode(body)
        assert ours.registers.tolist() == theirs.registers == registers
        assert np.asarray(ours.registers, dtype=np.uint16).tolist() == registers
        assert "values=" in str(ours)


@given(st.binary(max_size=253), st.data())
def test_any_register_byte_count_decodes_or_fails_as_pymodbus_does(payload: bytes, data: st.DataObject) -> None:
    # odd counts and counts beyond the packet included: pymodbus decodes the whole registers of an odd count
    count = data.draw(st.integers(0, min(255, len(payload) + 2)))
    body = bytes([count]) + payload
    for ours, theirs in ((HOLDING(), ReadHoldingRegistersResponse()), (INPUT(), ReadInputRegistersResponse())):
        try:
            theirs.decode(body)
        except ModbusIOException:
            with pytest.raises(ModbusIOException):
                ours.decode(body)
            continue
        ours.decode(body)
        assert ours.registers.tolist() == theirs.registers


def test_register_byte_count_beyond_the_packet_is_refused_and_odd_gives_whole_registers() -> None:
    with pytest.raises(ModbusIOException):
        HOLDING().decode(bytes([4, 0, 1]))
    odd = INPUT()
    odd.decode(bytes([3, 0, 1, 2, 3]))
    assert odd.registers.tolist() == [1]


@given(st.binary(max_size=251))
def test_bits_decode_as_pymodbus_does(body: bytes) -> None:
    # the byte count is ignored by both, and an empty payload gives no bits
    for ours, theirs in ((COILS(), ReadCoilsResponse()), (DISCRETE(), ReadDiscreteInputsResponse())):
        ours.decode(body)
        theirs.decode(body)
        assert ours.bits.dtype == np.bool_ and ours.bits.tolist() == theirs.bits


async def test_client_decodes_reads_with_the_array_responses() -> None:
    client = tcp_client("127.0.0.1", 1, 1.0)
    decode_registers_as_arrays(client)
    table = client.ctx.framer.decoder.pdu_table
    assert {code: table[code][1] for code in (1, 2, 3, 4)} == {1: COILS, 2: DISCRETE, 3: HOLDING, 4: INPUT}
    assert tcp_client("127.0.0.1", 1, 1.0).ctx.framer.decoder.pdu_table[3][1] is ReadHoldingRegistersResponse


def test_pymodbus_timeout_and_stray_answer_lines_are_reworded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pymodbus's own logger, driven as pymodbus drives it: its timeout error and its "ERROR: ..." lines on stray
    answers, and the "Repeating...." that follows a repeat, leave pymodbus's logger at debug only (the source names
    the device of a timeout itself); the stray answers give one `modbus_stray_answer` warning per burst and device,
    with the ids pymodbus saw; pymodbus's other lines pass as they are."""
    from pymodbus.logging import Log as pymodbus_log

    Log: Any = pymodbus_log  # untyped
    _reword_pymodbus_lines()  # installed by every client the source, the sink and the probe open
    logger = logging.getLogger("pymodbus.logging")
    assert any(isinstance(f, _PymodbusLines) for f in logger.filters)
    monkeypatch.setattr(logger, "filters", [_PymodbusLines()])  # a fresh burst, whatever ran before
    caplog.set_level("DEBUG", logger="adapters")
    Log.warning("an unrelated line")  # also resets pymodbus's own repeat detection
    token = _DEVICE.set("plc-1")  # as `connect` sets it for the connection's callbacks
    Log.error("No response received after 0 retries, continue with next request")
    Log.warning("ERROR: received pdu without a corresponding request, IGNORING")
    Log.warning("ERROR: received pdu without a corresponding request, IGNORING")  # pymodbus: "Repeating...."
    Log.error("ERROR: request ask for transaction_id={} but got id={}, Skipping.", 7, 6)  # plc-1's burst
    _DEVICE.reset(token)
    token = _DEVICE.set("plc-2")
    Log.error("ERROR: request ask for id={} but got id={}, Skipping.", 1, 255)
    _DEVICE.reset(token)
    Log.warning("another unrelated line")
    pymodbus = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "pymodbus.logging"]
    assert pymodbus == [("WARNING", "an unrelated line"), ("WARNING", "another unrelated line")]
    ours = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("adapters")]
    assert [m for level, m in ours if level == "WARNING"] == [
        "event=modbus_stray_answer count=1 suppressed=0 device=plc-1 kind=answer_after_timeout",
        "event=modbus_stray_answer count=1 suppressed=0 device=plc-2 kind=other_device expected=1 got=255",
    ]
    debug = [m.split(" text=")[0] for level, m in ours if level == "DEBUG"]
    assert debug == [
        "event=modbus_pymodbus_line device=plc-1 kind=timeout",
        "event=modbus_pymodbus_line device=plc-1 kind=answer_after_timeout",
        "event=modbus_pymodbus_line device=plc-1 kind=answer_after_timeout",
        "event=modbus_pymodbus_line device=plc-1 kind=other_transaction",
        "event=modbus_pymodbus_line device=plc-2 kind=other_device",
    ]


def test_pymodbus_lines_stay_on_its_logger_at_debug_when_pymodbus_debugging_is_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pymodbus's own troubleshooting switch (its logger at DEBUG) keeps every line there, at debug level."""
    from pymodbus.logging import Log as pymodbus_log

    Log: Any = pymodbus_log  # untyped
    logger = logging.getLogger("pymodbus.logging")
    monkeypatch.setattr(logger, "filters", [_PymodbusLines()])
    caplog.set_level("DEBUG", logger="pymodbus.logging")
    Log.warning("an unrelated line")
    Log.error("No response received after 0 retries, continue with next request")
    lines = [(r.levelname, r.getMessage().split("\n")[0]) for r in caplog.records if r.name == "pymodbus.logging"]
    assert lines == [
        ("WARNING", "an unrelated line"),
        ("DEBUG", "No response received after 0 retries, continue with next request"),
    ]
