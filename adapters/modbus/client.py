"""pymodbus clients as the source, the write sink and the probe open them: one request costs at most one timeout.

pymodbus is imported inside the functions, so importing this module (or the planner, or the config) stays cheap.
Reconnecting is the supervisor's job (with jittered back-off), never the library's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from contextvars import ContextVar
from functools import cache
from typing import Any

import numpy as np

from adapters.base import AdapterError
from adapters.supervise import BurstLog

__all__ = [
    "FUNCTION_CODE",
    "READ_METHOD",
    "connect",
    "decode_registers_as_arrays",
    "exceptions",
    "serial_client",
    "tcp_client",
]

log = logging.getLogger(__name__)

READ_METHOD = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "input": "read_input_registers",
    "holding": "read_holding_registers",
}
FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


_REWORDED = {  # pymodbus's wording -> what happened (no kind: the caller reports it with its device)
    "received pdu without a corresponding request": "answer_after_timeout",
    "request ask for transaction_id": "other_transaction",
    "request ask for id=": "other_device",
    "No response received after": "",
}
_IDS = re.compile(r"id=(\d+) but got id=(\d+)")
# the client's name for pymodbus's lines: set around the connect, so the connection's callbacks (where pymodbus
# logs) run with it; a copy of the connecting task's context is what the transport's reader keeps
_DEVICE: ContextVar[str] = ContextVar("modbus_device", default="")


class _PymodbusLines(logging.Filter):
    """pymodbus logs every request timeout as an error with a frame dump, and an answer it has no request for
    (one that came after its request timed out, another request's, another slave's) as a warning worded
    "ERROR: ...", and a repeat as a bare "Repeating....". None names the device, and at 3 a.m. each reads like a new
    fault. A timeout is counted and logged once per burst by its source (`event=modbus_timeout device=...`) or
    raised to the sink's caller; a stray answer becomes one warning per burst and device, `event=modbus_stray_answer
    device=... kind=...`. pymodbus's text goes to debug: on its own logger when that is at debug (pymodbus's own
    troubleshooting switch), else on this module's."""

    def __init__(self) -> None:
        super().__init__()
        self.stray: dict[str, BurstLog] = {}
        self._last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text == "Repeating....":  # pymodbus's note that its last line came again (the third is not logged)
            kind = self._last
        else:
            kind = next((k for marker, k in _REWORDED.items() if marker in text), None)
            self._last = kind
        if kind is None:
            return True
        device = _DEVICE.get() or "unknown"
        if kind:
            burst = self.stray.setdefault(device, BurstLog("modbus_stray_answer"))
            if ids := _IDS.search(text):  # the slave or transaction the answer was for: a wrong unit id shows here
                burst(device=device, kind=kind, expected=ids[1], got=ids[2])
            else:
                burst(device=device, kind=kind)
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return True
        log.debug("event=modbus_pymodbus_line device=%s kind=%s text=%r", device, kind or "timeout", text)
        return False


@cache
def _reword_pymodbus_lines() -> None:
    logging.getLogger("pymodbus.logging").addFilter(_PymodbusLines())


def tcp_client(host: str, port: int, timeout_s: float) -> Any:
    from pymodbus.client import AsyncModbusTcpClient

    _reword_pymodbus_lines()

    # retries=0 and no automatic reconnect: one request costs at most one timeout, and reconnecting is the
    # supervisor's job (with jittered back-off), not the library's
    return AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0)


def serial_client(port: str, baudrate: int, parity: str, stopbits: int, timeout_s: float) -> Any:
    from pymodbus.client import AsyncModbusSerialClient

    _reword_pymodbus_lines()
    return AsyncModbusSerialClient(
        port,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=8,
        timeout=timeout_s,
        retries=0,
        reconnect_delay=0,
    )


async def connect(client: Any, what: str, timeout_s: float, name: str = "") -> None:
    """Connect or raise `AdapterError` naming `what` (host:port or serial path); pymodbus's lines about this
    connection name `name` (the device or sink; default `what`)."""
    token = _DEVICE.set(name or what)
    try:
        ok = await asyncio.wait_for(client.connect(), timeout_s)
    except (TimeoutError, OSError) as exc:
        raise AdapterError(f"cannot connect to {what}: {exc!r}") from exc
    finally:
        _DEVICE.reset(token)
    if not ok:
        raise AdapterError(f"cannot connect to {what}")


def exceptions() -> tuple[type[Exception], type[Exception]]:
    """(connection lost, no response) exception classes of the installed pymodbus."""
    from pymodbus.exceptions import ConnectionException, ModbusIOException

    return ConnectionException, ModbusIOException


@cache
def _array_responses() -> tuple[type[Any], ...]:
    """Read responses (function codes 1 to 4) whose `registers` or `bits` is one numpy array.

    pymodbus decodes a response value by value (a `struct.unpack` and a list append per register, eight appends per
    byte of bits) and formats the whole response for a debug line it then drops; at a 10 ms poll of 500 tags that
    was a fifth of the source's CPU. The register byte count is checked as pymodbus checks it, and an odd one gives
    its whole registers, as pymodbus's loop does (refusing it would drop the connection on every poll of such a
    device: the framer raises out of the transport's callback); bits are unpacked from every byte after the count,
    LSB first, as pymodbus does.
    """
    from pymodbus.exceptions import ModbusIOException
    from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
    from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

    def decode_registers(self: Any, data: bytes) -> None:
        count = int(data[0])
        if count >= len(data):
            raise ModbusIOException(
                f"byte_count {count} does not fit a packet of {len(data)} bytes", function_code=self.function_code
            )
        self.registers = np.frombuffer(data, dtype=">u2", count=count // 2, offset=1)

    def decode_bits(self: Any, data: bytes) -> None:
        # sliced after frombuffer: an empty payload gives no bits, as in pymodbus, not an error
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)[1:], bitorder="little").view(np.bool_)

    def summary(self: Any) -> str:
        values = self.registers if self.function_code > 2 else self.bits
        return f"{type(self).__name__}(dev_id={self.dev_id}, transaction_id={self.transaction_id}, " \
            f"values={len(values)})"  # fmt: skip

    registers = {"decode": decode_registers, "__str__": summary, "__slots__": ()}
    bits = {"decode": decode_bits, "__str__": summary, "__slots__": ()}
    return (
        type("HoldingRegistersArray", (ReadHoldingRegistersResponse,), registers),
        type("InputRegistersArray", (ReadInputRegistersResponse,), registers),
        type("CoilsArray", (ReadCoilsResponse,), bits),
        type("DiscreteInputsArray", (ReadDiscreteInputsResponse,), bits),
    )


def decode_registers_as_arrays(client: Any) -> None:
    """Have `client` decode register and bit reads into numpy arrays (pymodbus's custom-response hook); for readers
    that take the values as arrays (the polling source), not for code that expects pymodbus's lists."""
    for response in _array_responses():
        client.register(response)
