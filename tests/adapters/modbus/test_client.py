"""The source's array responses decode every payload as pymodbus's own responses do, and refuse what they refuse."""

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
    the device of a timeout itself); the stray answers give one `modbus_stray_answer` warning per burst; pymodbus's
    other lines pass as they are."""
    from pymodbus.logging import Log as pymodbus_log

    Log: Any = pymodbus_log  # untyped
    _reword_pymodbus_lines()  # installed by every client the source, the sink and the probe open
    logger = logging.getLogger("pymodbus.logging")
    assert any(isinstance(f, _PymodbusLines) for f in logger.filters)
    monkeypatch.setattr(logger, "filters", [_PymodbusLines()])  # a fresh burst, whatever ran before
    caplog.set_level("DEBUG", logger="adapters")
    Log.warning("an unrelated line")  # also resets pymodbus's own repeat detection
    Log.error("No response received after 0 retries, continue with next request")
    Log.warning("ERROR: received pdu without a corresponding request, IGNORING")
    Log.warning("ERROR: received pdu without a corresponding request, IGNORING")  # pymodbus: "Repeating...."
    Log.error("ERROR: request ask for transaction_id={} but got id={}, Skipping.", 7, 6)
    Log.warning("another unrelated line")
    pymodbus = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "pymodbus.logging"]
    assert pymodbus == [("WARNING", "an unrelated line"), ("WARNING", "another unrelated line")]
    ours = [(r.levelname, r.getMessage().split(" count=")[0]) for r in caplog.records if r.name.startswith("adapters")]
    assert [o for o in ours if o[0] == "WARNING"] == [("WARNING", "event=modbus_stray_answer")]  # one burst
    kinds = [m.split()[1] for level, m in ours if level == "DEBUG"]
    assert kinds == ["kind=timeout", "kind=answer_after_timeout", "kind=answer_after_timeout", "kind=other_transaction"]
