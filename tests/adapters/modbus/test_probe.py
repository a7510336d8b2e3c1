"""The byte-order probe (`edge-runtime probe-order`): offline matching and a live CDAB float."""

from __future__ import annotations

import numpy as np
import yaml

from adapters.modbus.probe import match_orders, probe_order
from adapters.modbus.simulator import serve_simulated

from .common import tcp


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
