"""`edge-runtime probe-order`: find a Modbus value's dtype, byte/word order and decimal scale on a live device.

A commissioning engineer knows what the display shows (50.0 Hz) but not how the 1990s drive encodes it; the probe
reads a few registers around the manual's address and prints ready-to-paste profile tag lines.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import numpy.typing as npt

from adapters.base import AdapterError
from adapters.modbus.client import READ_METHOD, connect, tcp_client
from adapters.modbus.codec import ORDERS, decoder, register_count

__all__ = ["match_orders", "probe_order"]


def _tag_line(table: str, address: int, dtype: str, order: str, scale: float, value: float) -> str:
    scale_part = "" if scale == 1.0 else f", scale: {scale:g}"
    return (
        f"- {{name: probe_{table}_{address}, table: {table}, address: {address}, dtype: {dtype}, "
        f"byte_order: {order}{scale_part}}}  # reads {value:.6g}"
    )


def match_orders(
    regs: npt.NDArray[np.uint16], first: int, register: int, table: str, expect: float, tolerance: float
) -> list[str]:
    """Profile lines for every (start, dtype, order, scale) whose decoding of `regs` is within tolerance."""
    lines: list[tuple[int, str]] = []
    scales = (1.0, 0.1, 0.01, 0.001, 10.0)
    for start in (register, register - 1, register + 1):
        offset = start - first
        # a float match is rarely an accident; among integers the narrowest that fits is the likeliest
        for dtype in ("float32", "float64", "int16", "uint16", "int32", "uint32", "int64"):
            width = register_count(dtype)
            if offset < 0 or offset + width > regs.size:
                continue
            # 16-bit values ignore word order: report ABCD and BADC only
            for order in ORDERS if width > 1 else ("ABCD", "BADC"):
                value = float(decoder(dtype, order)(regs, np.array([offset], dtype=np.intp))[0])
                if not math.isfinite(value):
                    continue
                for scale in scales if dtype[0] in "iu" else (1.0,):
                    scaled = value * scale
                    if abs(scaled - expect) <= tolerance * max(1.0, abs(expect)):
                        rank = (0 if start == register else 10) + (0 if scale == 1.0 else 1)
                        lines.append((rank, _tag_line(table, start, dtype, order, scale, scaled)))
    return [line for _, line in sorted(lines, key=lambda x: x[0])]


async def probe_order(
    host: str,
    port: int,
    device_id: int,
    table: str,
    register: int,
    expect: float,
    tolerance: float = 1e-3,
    *,
    timeout_s: float = 2.0,
) -> list[str]:
    """Find which dtype/byte order (and decimal scale) makes `register` read `expect`.

    Reads a few registers around `register` (a manual's off-by-one is common) and returns ready-to-paste
    profile tag lines, best first: exact address before neighbours, unscaled before scaled. `tolerance` is
    relative to `expect` (absolute below 1). An empty list means no combination matched.
    """
    if table not in ("holding", "input"):
        raise ValueError("probe_order reads holding or input registers")
    client = tcp_client(host, port, timeout_s)
    await connect(client, f"{host}:{port}", timeout_s + 5.0)
    try:
        method = getattr(client, READ_METHOD[table])
        windows = [(max(0, register - 1), register + 5), (register, register + 4), (register, register + 2)]
        windows.append((register, register + 1))
        for first, stop in windows:
            response = await asyncio.wait_for(
                method(first, count=stop - first, device_id=device_id), timeout_s * 2 + 1.0
            )
            if not response.isError():
                regs = np.asarray(response.registers, dtype=np.uint16)
                return match_orders(regs, first, register, table, expect, tolerance)
        raise AdapterError(f"device refuses to read {table} {register}: {response}")
    finally:
        client.close()
