"""adapters.types: the shared validated values accept every real host form and refuse the malformed ones."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from adapters.types import Endpoint, Host, Port, QueueSize


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.5", "plc-1.line2.plant.local", "localhost", "::1", "[fe80::1]", "broker."]
)
def test_real_hosts_are_accepted(host: str) -> None:
    assert TypeAdapter(Host).validate_python(host) == host


@pytest.mark.parametrize("host", ["", "256.300.1.1", "exa mple!!", "127.0.0.1:1883", "-plc", "a..b", "1.2.3"])
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Host).validate_python(host)


def test_endpoints_ports_and_sizes() -> None:
    ok = TypeAdapter(Endpoint).validate_python
    assert ok("opc.tcp://10.0.0.5:4840/freeopcua/server") and ok("opc.tcp://cell7")
    for bad in ("opc.tcp://", "opc.tcp://:4840", "http://x:1", "opc.tcp://x:99999"):
        with pytest.raises(ValidationError):
            ok(bad)
    for adapter, value in ((Port, True), (Port, 0), (QueueSize, True), (QueueSize, 10**14)):
        with pytest.raises(ValidationError):
            TypeAdapter(adapter).validate_python(value)
    assert TypeAdapter(QueueSize).validate_python(256) == 256
