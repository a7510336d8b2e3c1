"""pymodbus clients as the source, the write sink and the probe open them: one request costs at most one timeout.

pymodbus is imported inside the functions, so importing this module (or the planner, or the config) stays cheap.
Reconnecting is the supervisor's job (with jittered back-off), never the library's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.base import AdapterError

__all__ = ["FUNCTION_CODE", "READ_METHOD", "connect", "exceptions", "serial_client", "tcp_client"]

READ_METHOD = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "input": "read_input_registers",
    "holding": "read_holding_registers",
}
FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def tcp_client(host: str, port: int, timeout_s: float) -> Any:
    from pymodbus.client import AsyncModbusTcpClient

    # retries=0 and no automatic reconnect: one request costs at most one timeout, and reconnecting is the
    # supervisor's job (with jittered back-off), not the library's
    return AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0)


def serial_client(port: str, baudrate: int, parity: str, stopbits: int, timeout_s: float) -> Any:
    from pymodbus.client import AsyncModbusSerialClient

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


async def connect(client: Any, what: str, timeout_s: float) -> None:
    """Connect or raise `AdapterError` naming `what` (host:port or serial path)."""
    try:
        ok = await asyncio.wait_for(client.connect(), timeout_s)
    except (TimeoutError, OSError) as exc:
        raise AdapterError(f"cannot connect to {what}: {exc!r}") from exc
    if not ok:
        raise AdapterError(f"cannot connect to {what}")


def exceptions() -> tuple[type[Exception], type[Exception]]:
    """(connection lost, no response) exception classes of the installed pymodbus."""
    from pymodbus.exceptions import ConnectionException, ModbusIOException

    return ConnectionException, ModbusIOException
