"""OPC UA source, results server and simulator against real asyncua servers on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from adapters.base import AdapterError, Backoff, DeliveryError, Reading, Sample, Sink, Source, free_port, supervise
from adapters.opcua import (
    OpcuaConfig,
    OpcuaServerConfig,
    OpcuaServerSink,
    OpcuaSource,
    running_simulator,
    simulate,
)
from tests.helpers import until

PROFILE = Path(__file__).resolve().parents[2] / "configs" / "devices" / "weld_cell_opcua.yaml"
T0_NS = 1_767_225_600_123_456_000  # 2026-01-01T00:00:00.123456Z, microsecond-exact like OPC UA DateTime in asyncua


def device(port: int, **overrides: Any) -> OpcuaConfig:
    """The weld cell profile merged under a deployment entry, as the loader does (entry keys win)."""
    raw = yaml.safe_load(PROFILE.read_text())
    entry = {"id": "weld1", "endpoint": f"opc.tcp://127.0.0.1:{port}", "watchdog_interval_s": 0.5, **overrides}
    return OpcuaConfig.model_validate({**raw, **entry})


def small_device(port: int, **overrides: Any) -> OpcuaConfig:
    nodes = [
        {"name": "current", "node_id": "ns=2;s=Weld.Current", "unit": "A", "sampling_interval_ms": 0},
        {"name": "line", "node_id": "ns=2;s=Seam.ThermalLine", "unit": "degC", "is_array": True, "rate_hz": 50.0},
    ]
    fields: dict[str, Any] = {
        "kind": "opcua",
        "id": "cell",
        "endpoint": f"opc.tcp://127.0.0.1:{port}",
        "publishing_interval_ms": 50,
        "watchdog_interval_s": 0.5,
        "nodes": nodes,
    }
    return OpcuaConfig.model_validate({**fields, **overrides})


def has_value(got: list[Reading], value: float) -> Callable[[], bool]:
    return lambda: any(r.value.shape == () and float(r.value) == value for r in got)


@contextlib.asynccontextmanager
async def supervised(source: OpcuaSource, backoff: Backoff | None = None) -> AsyncIterator[list[Reading]]:
    got: list[Reading] = []

    async def emit(sample: Sample) -> None:
        assert isinstance(sample, Reading)
        got.append(sample)

    task = asyncio.create_task(supervise(source, emit, backoff or Backoff(initial_s=0.05, max_s=0.3)))
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ------------------------------------------------------------------------------------------------ config


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


def test_components_satisfy_protocols() -> None:
    assert isinstance(OpcuaSource(small_device(4840)), Source)
    assert isinstance(OpcuaServerSink(OpcuaServerConfig(kind="opcua-server", id="scada")), Sink)


# ------------------------------------------------------------------------------------------------ source


async def test_subscription_readings_carry_timestamp_quality_and_shape() -> None:
    port = free_port()
    cfg = small_device(port)
    async with running_simulator(cfg, port=port) as sim, supervised(OpcuaSource(cfg)) as got:
        await until(lambda: {r.stream for r in got} == {"cell.current", "cell.line"}, what="initial values")
        n = len(got)
        await sim.write("current", 181.5, source_t_ns=T0_NS)
        await sim.write("current", 0.0, status="UncertainLastUsableValue", source_t_ns=T0_NS + 1000)
        await sim.write("current", 0.0, status="BadSensorFailure", source_t_ns=T0_NS + 2000)
        await sim.write("line", np.linspace(20.0, 400.0, 32), source_t_ns=T0_NS + 3000)
        await until(lambda: len(got) >= n + 4, what="four changes")
    new = got[n:]
    current = [r for r in new if r.stream == "cell.current"]
    assert [r.quality for r in current] == ["good", "uncertain", "bad"]
    assert [r.t_ns for r in current] == [T0_NS, T0_NS + 1000, T0_NS + 2000]
    assert current[0].value.shape == () and float(current[0].value) == 181.5 and current[0].unit == "A"
    assert current[0].rate_hz is None
    (line,) = [r for r in new if r.stream == "cell.line"]
    assert line.value.shape == (32,) and line.rate_hz == 50.0 and line.t_ns == T0_NS + 3000
    np.testing.assert_allclose(line.value, np.linspace(20.0, 400.0, 32))


@pytest.mark.parametrize("queue_size", [1000, 1])
async def test_queue_size_keeps_every_change_between_publishes(queue_size: int) -> None:
    port = free_port()
    cfg = small_device(port, publishing_interval_ms=1000, queue_size=queue_size)
    async with running_simulator(cfg, port=port) as sim, supervised(OpcuaSource(cfg)) as got:
        await until(lambda: any(r.stream == "cell.current" for r in got), what="initial value")
        for i in range(50):
            await sim.write("current", float(i), source_t_ns=T0_NS + i * 1000)
        await until(lambda: any(r.stream == "cell.current" and float(r.value) == 49.0 for r in got), what="last")
    values = [float(r.value) for r in got if r.stream == "cell.current" and T0_NS <= r.t_ns < T0_NS + 50_000]
    if queue_size > 1:
        assert values == [float(i) for i in range(50)]
    else:  # the library default: changes between two publishes are silently lost
        assert len(values) < 50


async def test_poll_mode_reads_periodically() -> None:
    port = free_port()
    nodes = [{"name": "hall", "node_id": "ns=2;s=Cell.AmbientTemp", "unit": "degC", "mode": "poll"}]
    cfg = small_device(port, nodes=[{**nodes[0], "sampling_interval_ms": 50}])
    async with running_simulator(cfg, port=port) as sim, supervised(OpcuaSource(cfg)) as got:
        await sim.write("hall", -27.5, source_t_ns=T0_NS)
        await until(lambda: sum(float(r.value) == -27.5 for r in got) >= 3, what="three polls")
        await sim.write("hall", -28.0, status="UncertainSensorNotAccurate", source_t_ns=T0_NS + 5000)
        await until(lambda: any(float(r.value) == -28.0 for r in got), what="new value")
    last = next(r for r in got if float(r.value) == -28.0)
    assert last.stream == "cell.hall" and last.quality == "uncertain" and last.t_ns == T0_NS + 5000


async def test_unknown_node_does_not_stop_the_others() -> None:
    port = free_port()
    cfg = small_device(port)
    served = small_device(port, nodes=[cfg.nodes[0].model_dump()])  # the server lacks the array node
    source = OpcuaSource(cfg)
    async with running_simulator(served, port=port) as sim, supervised(source) as got:
        await sim.write("current", 12.0)
        await until(lambda: any(float(r.value) == 12.0 for r in got), what="known node")
    assert source.stats["node_errors"] == 1 and source.stats["reconnects"] == 0


async def test_recovers_within_5_s_of_server_restart() -> None:
    """A restarted server must not leave the gateway silent (the complaint against other collectors)."""
    port = free_port()
    cfg = device(port)
    source = OpcuaSource(cfg)
    async with supervised(source) as got:
        async with running_simulator(cfg, port=port, animate=True):
            await until(lambda: len({r.stream for r in got}) == len(cfg.nodes), what="all nodes before restart")
        # the old server is gone: the source notices and keeps retrying
        await until(lambda: source.stats["reconnects"] >= 2, what="dead server detected")
        async with running_simulator(cfg, port=port) as sim:
            back = time.monotonic()
            await sim.write("current", 999.0)
            while not has_value(got, 999.0)():
                assert time.monotonic() - back < 5.0, "no data within 5 s of the server being back"
                await asyncio.sleep(0.02)
            await until(lambda: sum(r.stream == "weld1.hall_temp" for r in got) >= 2, what="polled node after restart")


async def test_stream_fails_when_server_stops() -> None:
    port = free_port()
    cfg = small_device(port)
    source = OpcuaSource(cfg)
    async with running_simulator(cfg, port=port):
        await source.open()
        stream = source.stream()
        first = await asyncio.wait_for(anext(stream), 20)
        assert first.stream.startswith("cell.")
    try:
        with pytest.raises(AdapterError, match="connection lost"):
            async with asyncio.timeout(20):
                async for _ in stream:
                    pass
    finally:
        await source.close()


async def test_open_fails_cleanly_without_server() -> None:
    source = OpcuaSource(small_device(free_port(), timeout_s=2.0))
    with pytest.raises(AdapterError, match="cannot connect"):
        await source.open()
    await source.close()


# ------------------------------------------------------------------------------------------------ security


def _write_cert(tmp: Path, name: str, uri: str, *, server: bool) -> tuple[Path, Path]:
    import ipaddress

    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
    ]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, sans, [usage], days=2)
    folder = tmp / name
    folder.mkdir()
    cert_path, key_path = folder / f"{name}.der", tmp / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


async def test_sign_and_encrypt_with_generated_certificates(tmp_path: Path) -> None:
    port = free_port()
    served = small_device(port)
    server_cert, server_key = _write_cert(tmp_path, "server", "urn:edge-runtime:sim:cell", server=True)
    client_cert, client_key = _write_cert(tmp_path, "client", "urn:edge-runtime:opcua-client", server=False)
    secure = small_device(
        port,
        security_policy="Basic256Sha256",
        security_mode="SignAndEncrypt",
        client_certificate=client_cert,
        client_private_key=client_key,
        trust_list=[server_cert.parent],
        username="welder",
        password="s3cret",
    )
    async with running_simulator(
        served,
        port=port,
        security_mode="SignAndEncrypt",
        certificate=server_cert,
        private_key=server_key,
        trust_list=[client_cert.parent],
        users={"welder": "s3cret"},
    ) as sim:
        # the server refuses a plain channel, and a wrong password
        for bad in (
            small_device(port, timeout_s=3.0),
            OpcuaConfig.model_validate({**secure.model_dump(), "password": "wrong"}),
        ):
            source = OpcuaSource(bad)
            with pytest.raises(AdapterError, match="cannot connect"):
                await source.open()
            await source.close()
        # pinned server certificate, encrypted channel, user name and password
        pinned = secure.model_copy(update={"server_certificate": server_cert, "trust_list": []})
        for cfg in (secure, pinned):
            async with supervised(OpcuaSource(cfg)) as got:
                await sim.write("current", 42.0)
                await until(has_value(got, 42.0), what="encrypted data")
                await sim.write("current", 0.0)


async def test_untrusted_server_certificate_is_refused(tmp_path: Path) -> None:
    port = free_port()
    server_cert, server_key = _write_cert(tmp_path, "server", "urn:edge-runtime:sim:cell", server=True)
    client_cert, client_key = _write_cert(tmp_path, "client", "urn:edge-runtime:opcua-client", server=False)
    other, _ = _write_cert(tmp_path, "other", "urn:other", server=True)
    cfg = small_device(
        port,
        security_policy="Basic256Sha256",
        security_mode="Sign",
        client_certificate=client_cert,
        client_private_key=client_key,
        trust_list=[other.parent],
    )
    async with running_simulator(
        small_device(port), port=port, security_mode="Sign", certificate=server_cert, private_key=server_key
    ):
        source = OpcuaSource(cfg)
        with pytest.raises(AdapterError, match="cannot connect"):
            await source.open()
        await source.close()


# ------------------------------------------------------------------------------------------------ results server


def _result(pipeline: str, seq: int, **task: Any) -> dict[str, Any]:
    return {
        "pipeline": pipeline,
        "seq": seq,
        "t_ns": T0_NS + seq * 1_000_000,
        "latency_ns": 12_500_000,
        "model": "weld_inspector@1.0.0+ab12cd34",
        "stream": "weld1.cam",
        **task,
    }


class _Collect:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.append(val)


async def test_results_server_exposes_latest_result() -> None:
    from asyncua import Client

    port = free_port()
    cfg = OpcuaServerConfig(kind="opcua-server", id="scada", endpoint=f"opc.tcp://127.0.0.1:{port}")
    sink = OpcuaServerSink(cfg)
    with pytest.raises(DeliveryError):
        await sink.deliver(_result("welds", 1))
    await sink.open()
    client = Client(cfg.endpoint, timeout=10)
    try:
        await sink.deliver(_result("welds", 1, decision="ok", labels=["good", "porosity"], scores=[0.9, 0.1]))
        await client.connect()
        ns = await client.get_namespace_index(cfg.namespace_uri)
        assert ns == sink.namespace_index
        folder = await client.nodes.objects.get_child([f"{ns}:EdgeRuntime", f"{ns}:welds"])
        seq_node = await folder.get_child(f"{ns}:Seq")
        assert seq_node.nodeid.to_string() == f"ns={ns};s=EdgeRuntime.welds.Seq"
        handler = _Collect()
        sub = await client.create_subscription(50, handler)
        await sub.subscribe_data_change(seq_node, queuesize=100)
        await until(lambda: handler.values == [1], what="initial Seq")
        last = _result("welds", 3, decision="reject", label="porosity", score=0.87)
        await sink.deliver(_result("welds", 2, decision="ok"))
        await sink.deliver(last)
        await until(lambda: handler.values == [1, 2, 3], what="Seq 2 and 3")

        async def read(name: str) -> Any:
            return await (await folder.get_child(f"{ns}:{name}")).read_value()

        assert await read("Decision") == "reject"
        assert await read("Label") == "porosity"
        assert await read("Score") == pytest.approx(0.87)
        assert math.isnan(await read("AnomalyScore"))
        assert await read("LatencyMs") == pytest.approx(12.5)
        assert await read("Model") == "weld_inspector@1.0.0+ab12cd34"
        assert await read("Stream") == "weld1.cam"
        stamp = await read("TimestampUtc")
        assert stamp.replace(tzinfo=UTC) == datetime.fromtimestamp((T0_NS + 3_000_000) / 1e9, UTC)
        assert json.loads(await read("Json")) == last
        dv = await seq_node.read_data_value()
        assert dv.SourceTimestamp.replace(tzinfo=UTC) == stamp.replace(tzinfo=UTC)

        # a second pipeline appears on its first result; a malformed result is counted, not raised
        await sink.deliver(_result("vibration", 7, decision="alarm", anomaly_score=3.25))
        await sink.deliver({"seq": 1})
        names = {(await c.read_browse_name()).Name for c in await (await folder.get_parent()).get_children()}
        assert names == {"welds", "vibration"}
        vib = await client.nodes.objects.get_child([f"{ns}:EdgeRuntime", f"{ns}:vibration", f"{ns}:AnomalyScore"])
        assert await vib.read_value() == pytest.approx(3.25)
        assert sink.stats["malformed"] == 1 and sink.stats["delivered"] == 4
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
        await sink.close()


async def test_results_server_requires_configured_security(tmp_path: Path) -> None:
    from asyncua import Client

    port = free_port()
    cert, key = _write_cert(tmp_path, "results", "urn:edge-runtime:results-server", server=True)
    cfg = OpcuaServerConfig(
        kind="opcua-server",
        id="scada",
        endpoint=f"opc.tcp://127.0.0.1:{port}",
        security_policy="Basic256Sha256",
        security_mode="SignAndEncrypt",
        certificate=cert,
        private_key=key,
    )
    sink = OpcuaServerSink(cfg)
    await sink.open()
    try:
        await sink.deliver(_result("rice", 1, decision="accept"))
        client = Client(cfg.endpoint, timeout=5)
        endpoints = await client.connect_and_get_server_endpoints()
        assert {e.SecurityPolicyUri.rsplit("#", 1)[-1] for e in endpoints} == {"Basic256Sha256"}
        assert {e.SecurityMode.name for e in endpoints} == {"SignAndEncrypt"}
    finally:
        await sink.close()


# ------------------------------------------------------------------------------------------------ simulator


async def test_simulate_serves_profile_until_stopped() -> None:
    port = free_port()
    cfg = device(port)
    stop = asyncio.Event()
    task = asyncio.create_task(simulate(cfg, port=port, stop=stop))
    try:
        async with supervised(OpcuaSource(cfg)) as got:
            await until(lambda: sum(r.stream == "weld1.current" for r in got) >= 5, what="changing current")
            line = next(r for r in got if r.stream == "weld1.thermal_line")
            assert line.value.shape == (32,) and 0 < float(line.value.max()) < 1000
            volts = [float(r.value) for r in got if r.stream == "weld1.voltage"]
            assert all(0.0 <= v < 60.0 for v in volts) and len(set(volts)) > 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
