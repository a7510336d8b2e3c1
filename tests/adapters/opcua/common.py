"""Helpers of the OPC UA tests: the weld cell profile, a small device, a supervised source, certificates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml

from adapters.base import Reading, Result, Sample
from adapters.opcua.config import OpcuaConfig
from adapters.opcua.source import OpcuaSource
from adapters.supervise import Backoff, cancel_and_wait, supervise

PROFILE = Path(__file__).resolve().parents[3] / "configs" / "devices" / "weld_cell_opcua.yaml"
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
        assert await cancel_and_wait(task)  # one cancel() can be lost in Python 3.11's wait_for


def write_cert(tmp: Path, name: str, uri: str, *, server: bool) -> tuple[Path, Path]:
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


def result(pipeline: str, seq: int, **fields: Any) -> Result:
    """A result as a task builds it, with the head the outbox and the service fill in."""
    return Result(
        **{
            "pipeline": pipeline,
            "seq": seq,
            "t_ns": T0_NS + seq * 1_000_000,
            "latency_ns": 12_500_000,
            "model": "weld_inspector@1.0.0+ab12cd34",
            "stream": "weld1.cam",
            "decision": "",
            **fields,
        }
    )
