"""A simulated machine: an OPC UA server serving a device profile's nodes (tests, demo, `edge-runtime simulate`).

`simulate(config, port=..., stop=...)` serves the nodes with plausible time-varying values of a 2015-era MIG/MAG
weld cell, picked by each node's unit and name (weld current and arc voltage pulsing with a 4 s weld / 2 s index
cycle, wire feed, coolant and hall temperatures, an array-valued thermal line); `running_simulator` is the same
server as an async context manager, on a free loopback port by default, with a `write` for tests and the
security options of a real machine (required policy, trusted client certificates, user names and passwords).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import numpy as np

from adapters.base import now_ns
from adapters.loopback import free_port
from adapters.opcua.config import OpcuaConfig, OpcuaNode, SecurityMode, SecurityPolicy
from adapters.opcua.convert import ns_to_dt
from adapters.opcua.security import new_server, stop_server

__all__ = ["SimulatedServer", "running_simulator", "simulate", "with_port"]

log = logging.getLogger("adapters.opcua")


def with_port(endpoint: str, port: int) -> str:
    """`endpoint` with its port replaced (the host kept, 127.0.0.1 if it has none)."""
    url = urlparse(endpoint)
    return urlunparse(url._replace(netloc=f"{url.hostname or '127.0.0.1'}:{port}"))


@dataclass(slots=True)
class SimulatedServer:
    """A running simulated machine: its endpoint and a way to set a node's value from a test."""

    server: Any
    endpoint: str
    nodes: dict[str, Any] = field(default_factory=dict)  # node name -> asyncua Node
    held: dict[str, float] = field(default_factory=dict)  # node name -> value the animation keeps (a scenario)

    def hold(self, name: str, value: float | None) -> None:
        """Keep an animated node at `value` (a cold snap's hall temperature); None hands it back to the animation."""
        if value is None:
            self.held.pop(name, None)
        else:
            self.held[name] = float(value)

    async def write(self, name: str, value: Any, *, status: str = "Good", source_t_ns: int | None = None) -> None:
        """Set a node's value with a status code name (e.g. `UncertainLastUsableValue`) and a source time."""
        from asyncua import ua

        node = self.nodes[name]
        vtype = await node.read_data_type_as_variant_type()
        if isinstance(value, np.ndarray):
            value = value.tolist()
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            StatusCode_=ua.StatusCode(getattr(ua.StatusCodes, status)),
            SourceTimestamp=ns_to_dt(source_t_ns if source_t_ns is not None else now_ns()),
            ServerTimestamp=datetime.now(UTC),
        )
        await self.server.write_attribute_value(node.nodeid, dv)

    async def stop(self) -> None:
        await stop_server(self.server)


_THERMAL_POINTS = 32


def _sim_value(node: OpcuaNode, t: float, rng: np.random.Generator) -> float | list[float]:
    """Plausible values for a 2015-era MIG/MAG weld cell, picked by unit and name."""
    key = f"{node.name} {node.unit}".lower()
    arc_on = (t % 6.0) < 4.0  # 4 s weld, 2 s index
    if node.is_array:
        x = np.linspace(0.0, 1.0, _THERMAL_POINTS)
        centre = (t % 6.0) / 6.0
        line = 25.0 + (380.0 if arc_on else 120.0) * np.exp(-(((x - centre) / 0.08) ** 2))
        return [float(v) for v in line + rng.normal(0.0, 1.5, x.size)]
    if "current" in key or node.unit == "A":
        return (180.0 + 8.0 * math.sin(2 * math.pi * 3.0 * t) + float(rng.normal(0, 2.0))) if arc_on else 0.0
    if "voltage" in key or node.unit == "V":
        return (24.0 + 0.6 * math.sin(2 * math.pi * 3.0 * t) + float(rng.normal(0, 0.2))) if arc_on else 0.0
    if "wire" in key or "m/min" in key:
        return (8.5 + float(rng.normal(0, 0.05))) if arc_on else 0.0
    if "travel" in key or "mm/s" in key:
        return (6.0 + float(rng.normal(0, 0.05))) if arc_on else 0.0
    if "temp" in key or "degc" in key or "°c" in key:
        base = 45.0 if "torch" in key or "cool" in key else -18.0  # unheated hall in winter
        return base + 3.0 * math.sin(2 * math.pi * t / 120.0) + float(rng.normal(0, 0.1))
    return float(math.sin(2 * math.pi * t / 10.0))


async def _start_simulator(
    config: OpcuaConfig,
    port: int | None,
    security_mode: SecurityMode,
    certificate: Path | None,
    private_key: Path | None,
    trust_list: Sequence[Path],
    users: Mapping[str, str] | None,
    security_policy: SecurityPolicy = "None",
    namespaces_before: Sequence[str] = (),
) -> SimulatedServer:
    from asyncua import ua

    endpoint = with_port(config.endpoint, port) if port is not None else config.endpoint
    server = await new_server(
        endpoint,
        name=f"edge-runtime simulated {config.id}",
        application_uri=f"urn:edge-runtime:sim:{config.id}",
        security_policy=security_policy,
        security_mode=security_mode,
        certificate=certificate,
        private_key=private_key,
        trust_list=trust_list,
        users=users,
    )
    rng = np.random.default_rng(0)
    sim = SimulatedServer(server, endpoint)
    for uri in namespaces_before:
        await server.register_namespace(uri)
    for n in config.nodes:
        node_id = n.node_id
        if node_id.startswith("nsu="):  # the device's own namespace, by URI: registered where it falls
            uri, _, rest = node_id[4:].partition(";")
            node_id = f"ns={await server.register_namespace(uri)};{rest}"
        nodeid = ua.NodeId.from_string(node_id)
        while len(await server.get_namespace_array()) <= nodeid.NamespaceIndex:
            await server.register_namespace(
                f"urn:edge-runtime:sim:{config.id}:ns{len(await server.get_namespace_array())}"
            )
        initial = _sim_value(n, 0.0, rng)
        variant = ua.Variant(initial, ua.VariantType.Double)
        sim.nodes[n.name] = await server.nodes.objects.add_variable(
            nodeid, ua.QualifiedName(n.name, nodeid.NamespaceIndex), variant
        )
    await server.start()
    return sim


@contextlib.asynccontextmanager
async def running_simulator(
    config: OpcuaConfig,
    *,
    port: int | None = None,
    animate: bool = False,
    security_mode: SecurityMode = "None",
    certificate: Path | None = None,
    private_key: Path | None = None,
    trust_list: Sequence[Path] = (),
    users: Mapping[str, str] | None = None,
    hold: Mapping[str, float] | None = None,
    security_policy: SecurityPolicy = "Basic256Sha256",
    namespaces_before: Sequence[str] = (),
) -> AsyncIterator[SimulatedServer]:
    """A simulated machine serving `config.nodes` on loopback (a free port unless given), stopped on exit.

    `animate` updates the values continuously as `simulate` does; otherwise tests set them with `write`. `hold`
    keeps animated nodes at given values from the first tick (a scenario; change them later with `sim.hold`).
    Security arguments make the server require a policy (`security_policy` when `security_mode` is not None),
    trust only `trust_list` and check `users`' passwords. `namespaces_before` are registered before the
    device's own, so `nsu=` node ids land on other indexes than their author saw (a renumbering server update).
    """
    if port is None:
        port = free_port()
    policy: SecurityPolicy = "None" if security_mode == "None" else security_policy
    sim = await _start_simulator(
        config, port, security_mode, certificate, private_key, trust_list, users, policy, namespaces_before
    )
    for name, value in (hold or {}).items():
        sim.hold(name, value)
    task = asyncio.create_task(_animate(sim, config)) if animate else None
    try:
        yield sim
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await sim.stop()


async def _animate(sim: SimulatedServer, config: OpcuaConfig) -> None:
    from asyncua import ua

    rng = np.random.default_rng(1)
    interval_s = max(0.02, min(n.sampling_interval_ms for n in config.nodes) / 1000)
    t0 = time.monotonic()
    while True:
        t = time.monotonic() - t0
        ts = datetime.now(UTC)
        for n in config.nodes:
            value = sim.held.get(n.name, _sim_value(n, t, rng))
            dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=ts, ServerTimestamp=ts)
            await sim.server.write_attribute_value(sim.nodes[n.name].nodeid, dv)
        await asyncio.sleep(interval_s)


def _tcp_port(port: str | None, endpoint: str) -> int | None:
    if port is None:
        return urlparse(endpoint).port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"OPC UA simulator: port {port!r} must be a TCP port number")
    return int(port)


async def simulate(config: OpcuaConfig, *, port: str | None, stop: asyncio.Event) -> None:
    """Serve a device profile's nodes with plausible values until `stop` is set.

    Listens on `port` (else the profile's endpoint port) on the endpoint's host; a `port` that is not a TCP port
    number is a ValueError.
    """
    async with running_simulator(config, port=_tcp_port(port, config.endpoint), animate=True) as sim:
        log.info("event=opcua_simulating device=%s endpoint=%s nodes=%d", config.id, sim.endpoint, len(sim.nodes))
        await stop.wait()
