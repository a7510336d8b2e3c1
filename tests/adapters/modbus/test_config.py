"""Modbus configuration (adapters.modbus.config) and the package's registered kinds."""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import adapters.modbus
from adapters.base import ExclusiveResource
from adapters.modbus.config import ModbusDeviceBase, ModbusRtuConfig, ModbusTcpConfig, ModbusWriteConfig

from .common import DEVICES, sink_config, tcp


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


def test_slaves_name_every_stream_prefix() -> None:
    plc = tcp(device_id=7, tags=[{"name": "a", "address": 0}])
    assert [(s.device_id, s.prefix, [t.name for t in s.tags]) for s in plc.slaves()] == [(7, "m", ["a"])]
    line = ModbusRtuConfig.model_validate(
        {
            "kind": "modbus-rtu",
            "id": "line1",
            "tags": [{"name": "speed", "address": 0}],
            "devices": [
                {"device_id": 1, "name": "fan"},
                {"device_id": 2, "name": "pump", "tags": [{"name": "flow", "address": 4}]},
            ],
        }
    )
    assert [(s.device_id, s.prefix, [t.name for t in s.tags]) for s in line.slaves()] == [
        (1, "line1.fan", ["speed"]),
        (2, "line1.pump", ["flow"]),  # a slave's own tags replace the line's
    ]
    with pytest.raises(TypeError, match="abstract"):
        ModbusDeviceBase.model_validate({"kind": "modbus-tcp", "tags": []})  # no slaves without a transport


def test_profiles_validate() -> None:
    drive = ModbusRtuConfig.model_validate(yaml.safe_load((DEVICES / "old_drive_rtu.yaml").read_text()))
    plc = ModbusTcpConfig.model_validate(yaml.safe_load((DEVICES / "plc_tcp.yaml").read_text()))
    assert any(t.byte_order == "CDAB" and t.dtype == "float32" for t in drive.tags)
    assert any(t.dtype == "int16" and t.scale == 0.1 for t in drive.tags)
    assert any(t.dtype == "bit" for t in plc.tags) and any(t.dtype == "int32" for t in plc.tags)


def test_a_serial_line_is_an_exclusive_resource_and_a_tcp_device_is_not() -> None:
    line = ModbusRtuConfig.model_validate(
        {"kind": "modbus-rtu", "serial_port": "/dev/ttyS3", "tags": [{"name": "a", "address": 0}]}
    )
    assert line.exclusive_resources() == [
        ExclusiveResource("serial_port", "serial port '/dev/ttyS3'", "list all slaves of one line in one device")
    ]
    assert tcp(tags=[{"name": "a", "address": 0}]).exclusive_resources() == []
    assert line.stream_prefixes() == ["modbus"]


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


def test_write_config_max_age_is_what_the_outbox_enforces() -> None:
    assert sink_config(502).max_age() == 2.0
    assert sink_config(502, max_age_s=0.25).max_age() == 0.25
    assert sink_config(502, max_age_s=None).max_age() is None


def test_kinds_point_at_real_components() -> None:
    kinds = {k.name: k for k in adapters.modbus.KINDS}
    assert {(k.name, k.role, k.config) for k in kinds.values()} == {
        ("modbus-tcp", "device", ModbusTcpConfig),
        ("modbus-rtu", "device", ModbusRtuConfig),
        ("modbus-write", "sink", ModbusWriteConfig),
    }
    for kind in kinds.values():
        for ref in (kind.component, kind.simulator, kind.report):
            if ref is not None:
                module, _, name = ref.partition(":")
                assert callable(getattr(importlib.import_module(module), name)), ref
    assert kinds["modbus-write"].simulator is None


def test_validating_a_profile_does_not_import_pymodbus() -> None:
    """`edge-runtime validate` loads every kind's config; pymodbus must wait until a component is built."""
    code = (
        "import sys, adapters.modbus, adapters.modbus.plan;"
        "from adapters.modbus.config import ModbusTcpConfig;"
        "ModbusTcpConfig.model_validate({'kind': 'modbus-tcp', 'tags': [{'name': 'a', 'address': 0}]});"
        "assert 'pymodbus' not in sys.modules, 'pymodbus imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=DEVICES.parents[1])
