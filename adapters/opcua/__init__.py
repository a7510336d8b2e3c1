"""OPC UA (asyncua 1.1): a client source for machines' servers (device kind `opcua`), a results server for SCADA
(sink kind `opcua-server`) and a simulated machine.

Modules: `config` (pydantic models), `security` (secure channels, trust lists, users, server set-up shared by
the three roles), `convert` (timestamps and status codes), `source` (`OpcuaSource`: subscriptions, polling and
recovery after a server restart), `sink` (`OpcuaServerSink` and its information model), `simulator`. Only
`config` loads with the registry; asyncua is imported when a component opens. See docs/opcua.md.
"""

from __future__ import annotations

from adapters.opcua.config import OpcuaConfig, OpcuaServerConfig
from adapters.registry import Kind

__all__ = ["KINDS"]

KINDS = (
    Kind(
        "opcua",
        "device",
        OpcuaConfig,
        component="adapters.opcua.source:OpcuaSource",
        simulator="adapters.opcua.simulator:simulate",
    ),
    Kind("opcua-server", "sink", OpcuaServerConfig, component="adapters.opcua.sink:OpcuaServerSink"),
)
