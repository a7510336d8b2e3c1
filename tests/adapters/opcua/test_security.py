"""Security (adapters.opcua.security) end to end: encrypted channels, trust lists, passwords, on real servers."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AdapterError
from adapters.opcua.config import OpcuaConfig, OpcuaServerConfig, SecurityPolicy
from adapters.opcua.simulator import running_simulator
from adapters.opcua.sink import OpcuaServerSink
from adapters.opcua.source import OpcuaSource
from tests.helpers import free_port, until

from .common import has_value, result, small_device, supervised, write_cert


async def test_sign_and_encrypt_with_generated_certificates(tmp_path: Path) -> None:
    port = free_port()
    served = small_device(port)
    server_cert, server_key = write_cert(tmp_path, "server", "urn:edge-runtime:sim:cell", server=True)
    client_cert, client_key = write_cert(tmp_path, "client", "urn:edge-runtime:opcua-client", server=False)
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
    server_cert, server_key = write_cert(tmp_path, "server", "urn:edge-runtime:sim:cell", server=True)
    client_cert, client_key = write_cert(tmp_path, "client", "urn:edge-runtime:opcua-client", server=False)
    other, _ = write_cert(tmp_path, "other", "urn:other", server=True)
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


async def test_results_server_requires_configured_security(tmp_path: Path) -> None:
    from asyncua import Client

    port = free_port()
    cert, key = write_cert(tmp_path, "results", "urn:edge-runtime:results-server", server=True)
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
        await sink.deliver(result("rice", 1, decision="accept"))
        client = Client(cfg.endpoint, timeout=5)
        endpoints = await client.connect_and_get_server_endpoints()
        assert {e.SecurityPolicyUri.rsplit("#", 1)[-1] for e in endpoints} == {"Basic256Sha256"}
        assert {e.SecurityMode.name for e in endpoints} == {"SignAndEncrypt"}
    finally:
        await sink.close()


@pytest.mark.parametrize("policy", ["Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"])
async def test_newer_security_policies_when_a_client_asks_for_them(tmp_path: Path, policy: SecurityPolicy) -> None:
    """A server offering only `policy` (as newer PLC firmware may): the source connects with it, encrypted."""
    port = free_port()
    server_cert, server_key = write_cert(tmp_path, "server", "urn:edge-runtime:sim:cell", server=True)
    client_cert, client_key = write_cert(tmp_path, "client", "urn:edge-runtime:opcua-client", server=False)
    cfg = small_device(
        port,
        security_policy=policy,
        security_mode="SignAndEncrypt",
        client_certificate=client_cert,
        client_private_key=client_key,
        trust_list=[server_cert.parent],
    )
    async with running_simulator(
        small_device(port),
        port=port,
        security_policy=policy,
        security_mode="SignAndEncrypt",
        certificate=server_cert,
        private_key=server_key,
        trust_list=[client_cert.parent],
    ) as sim:
        endpoints = await sim.server.get_endpoints()
        # the policy URIs spell the names with underscores (…#Aes256_Sha256_RsaPss)
        assert {e.SecurityPolicyUri.rsplit("#", 1)[-1].replace("_", "") for e in endpoints} == {policy}
        async with supervised(OpcuaSource(cfg)) as got:
            await sim.write("current", 42.0)
            await until(has_value(got, 42.0), what=f"data over {policy}")


async def test_results_server_lets_in_only_configured_users_and_anonymous_reads_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncua's default user manager let `admin` in with any password as administrator (forge Decision and Seq,
    add and delete nodes). Now: wrong passwords and unknown names are refused, anonymous clients read but cannot
    write, add or delete, a `write` user writes Values of writable nodes only, and nobody changes the model."""
    from asyncua import Client, ua

    cfg = OpcuaServerConfig.model_validate(
        {
            "kind": "opcua-server",
            "id": "scada",
            "endpoint": f"opc.tcp://127.0.0.1:{free_port()}",
            "users": [
                {"name": "scada", "password": "s3cret-pw", "access": "write"},
                {"name": "viewer", "password": "view-pw"},
            ],
        }
    )
    sink = OpcuaServerSink(cfg)
    await sink.open()

    async def connect(user: str | None = None, password: str | None = None) -> Any:
        client = Client(cfg.endpoint, timeout=10)
        if user is not None:
            client.set_user(user)
            client.set_password(password or "")
        try:
            await client.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                await client.disconnect()  # a refused session leaves the channel open until closed
            raise
        return client

    try:
        await sink.deliver(result("weld", 1, decision="ok"))
        ns = sink.namespace_index
        decision_id = ua.NodeId("EdgeRuntime.weld.Decision", ns)
        for user, password in [("admin", "anything"), ("scada", "wrong"), ("nobody", "s3cret-pw"), ("scada", "")]:
            with pytest.raises(ua.UaStatusCodeError):
                await (await connect(user, password)).disconnect()

        anon = await connect()
        try:
            assert await anon.get_node(decision_id).read_value() == "ok"
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await anon.get_node(decision_id).write_value(ua.Variant("forged", ua.VariantType.String))
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await anon.get_node(ua.NodeId("EdgeRuntime", ns)).add_object(ns, "Rogue")
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await anon.delete_nodes([anon.get_node(decision_id)])
        finally:
            await anon.disconnect()

        # a node the server made writable (none of the results is): only a `write` user may write it
        writable = sink._server.get_node(ua.NodeId("EdgeRuntime.weld.Label", ns))
        await sink.on_server(writable.set_writable())
        viewer = await connect("viewer", "view-pw")
        scada = await connect("scada", "s3cret-pw")
        try:
            assert await viewer.get_node(decision_id).read_value() == "ok"
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await viewer.get_node(writable.nodeid).write_value(ua.Variant("x", ua.VariantType.String))
            await scada.get_node(writable.nodeid).write_value(ua.Variant("set by scada", ua.VariantType.String))
            assert await sink.on_server(writable.read_value()) == "set by scada"
            with pytest.raises(ua.UaStatusCodeError):  # results are read-only, even for a write user
                await scada.get_node(decision_id).write_value(ua.Variant("forged", ua.VariantType.String))
            access = ua.DataValue(ua.Variant(3, ua.VariantType.Byte))  # CurrentRead | CurrentWrite
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await scada.get_node(decision_id).write_attribute(ua.AttributeIds.AccessLevel, access)
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await scada.delete_nodes([scada.get_node(decision_id)])
        finally:
            await viewer.disconnect()
            await scada.disconnect()
        assert await sink.on_server(sink._server.get_node(decision_id).read_value()) == "ok"
    finally:
        await sink.close()
