"""OPC UA configuration (adapters.opcua.config) and the package's registered kinds."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

import adapters.opcua
from adapters import registry
from adapters.base import Sink, Source
from adapters.opcua.config import OpcuaServerConfig
from adapters.opcua.sink import OpcuaServerSink
from adapters.opcua.source import OpcuaSource

from .common import device, small_device


def test_profile_is_a_partial_device_config() -> None:
    cfg = device(4840)
    assert cfg.kind == "opcua" and cfg.security_policy == "None"
    assert cfg.queue_size > 1  # a queue of one loses changes between publishes
    by_name = {n.name: n for n in cfg.nodes}
    assert {"current", "voltage", "wire_feed", "thermal_line"} <= set(by_name)
    assert by_name["thermal_line"].is_array
    assert by_name["hall_temp"].mode == "poll"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"security_policy": "Basic256Sha256"}, "security_mode"),
        ({"security_mode": "SignAndEncrypt"}, "security_mode"),
        ({"security_policy": "Basic256Sha256", "security_mode": "Sign"}, "client_certificate"),
        ({"password": "x"}, "without username"),
        ({"nodes": [{"name": "a", "node_id": "Weld.Current"}]}, "node_id"),
        ({"nodes": [{"name": "a", "node_id": "ns=2;s=A", "rate_hz": 10}]}, "is_array"),
        ({"nodes": [{"name": "a", "node_id": "ns=2;s=A"}, {"name": "a", "node_id": "ns=2;s=B"}]}, "duplicate"),
        ({"queue_size": 0}, "queue_size"),
        ({"sampling": 1}, "sampling"),
    ],
)
def test_config_rejects(change: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        small_device(4840, **change)


def test_password_is_secret() -> None:
    cfg = small_device(4840, username="op", password="hunter2")
    assert "hunter2" not in repr(cfg) and "hunter2" not in cfg.model_dump_json()
    assert cfg.password is not None and cfg.password.get_secret_value() == "hunter2"


def test_registered_kinds_build_the_components() -> None:
    """The registry's refs resolve: a typo in `module:Class` would only show when a deployment starts."""
    kinds = {(k.role, k.name): k for k in adapters.opcua.KINDS}
    assert set(kinds) == {("device", "opcua"), ("sink", "opcua-server")}
    source: Source = registry.make_source(small_device(4840))
    sink: Sink = registry.make_sink(OpcuaServerConfig(kind="opcua-server", id="scada"))
    assert type(source) is OpcuaSource and source.name == "cell"
    assert type(sink) is OpcuaServerSink and sink.name == "scada"
    assert registry.simulator(device(4840)) is not None
    assert device(4840).stream_prefixes() == ["weld1"]


def test_validation_does_not_load_asyncua() -> None:
    """`validate` stays fast: only the config module loads with the registry, asyncua when a component opens."""
    code = "import sys, adapters.opcua; assert 'asyncua' not in sys.modules, 'asyncua loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
