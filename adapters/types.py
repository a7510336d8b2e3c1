"""Validated value types shared by every protocol's config (and the runtime's): hosts, ports, endpoints, sizes.

One definition each, so `validate` refuses the same bad value the same way wherever it appears. Beyond these,
`adapters.base.StrictModel` refuses NaN/infinity in every float field and a boolean where an integer is expected.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

__all__ = [
    "MAX_QUEUE",
    "MAX_RATE_HZ",
    "MIN_RATE_HZ",
    "Endpoint",
    "Host",
    "HostPort",
    "Port",
    "QueueSize",
    "RateHz",
    "check_host",
]

MAX_QUEUE = 10_000_000  # items in one bounded queue or buffer: far above any line, far below memory exhaustion
MIN_RATE_HZ = 1e-3  # one sample in ~17 min: slower is a scalar tag, not a waveform
MAX_RATE_HZ = 10e6  # 10 MHz: above any vibration or acoustic sensor on a line

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_host(value: str) -> str:
    """An IPv4 or IPv6 address or an RFC 1123 host name; ValueError naming what is wrong otherwise."""
    if not value:
        raise ValueError("empty host name")
    if ":" in value and not value.startswith("["):
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a host (a port goes in its own field)") from None
        return value
    if value.startswith("[") and value.endswith("]"):
        ipaddress.IPv6Address(value[1:-1])
        return value
    if re.fullmatch(r"[0-9.]+", value):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
        return value
    name = value[:-1] if value.endswith(".") else value
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{value!r} is not a valid host name (letters, digits, '-' and '.')")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port with a port in 1..65535, e.g. 127.0.0.1:9464")
    check_host(host)
    return value


def _endpoint(value: str) -> str:
    if not value.startswith("opc.tcp://"):
        raise ValueError("expected opc.tcp://host:port[/path]")
    authority = value[len("opc.tcp://") :].split("/", 1)[0]
    host, sep, port = authority.rpartition(":")
    if not sep:
        host, port = authority, "4840"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {value!r}: port must be 1..65535")
    check_host(host)
    return value


def _no_bool(value: object) -> object:
    if isinstance(value, bool):  # YAML `true` would otherwise be the integer 1
        raise ValueError("expected an integer, not a boolean")
    return value


Host = Annotated[str, AfterValidator(check_host)]
Port = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=65535)]
HostPort = Annotated[str, AfterValidator(_host_port)]
Endpoint = Annotated[str, AfterValidator(_endpoint)]
QueueSize = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=MAX_QUEUE)]
RateHz = Annotated[float, Field(ge=MIN_RATE_HZ, le=MAX_RATE_HZ)]
