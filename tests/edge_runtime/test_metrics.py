"""/metrics and /healthz over real HTTP, the systemd watchdog over a real notify socket, and a busy port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import Reading, Result
from edge_runtime import metrics
from edge_runtime.config import Deployment
from edge_runtime.service import Service
from tests.helpers import free_port, until
from tests.helpers.mosquitto import Mosquitto


def deployment(broker_port: int, tmp_path: Path, listen: str | None, **service: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "service": {"metrics_listen": listen, "outbox": {"path": str(tmp_path / "o.sqlite")}, **service},
            "devices": [{"id": "gw1", "kind": "mqtt", "port": broker_port, "subscriptions": [{"topic": "a/+"}]}],
            "pipelines": [
                {
                    "id": "vib",
                    "inputs": ["gw1.*"],
                    "task": {"kind": "vibration_anomaly"},
                    "model": {"name": "vibration_anomaly"},
                    "batching": {"max_batch": 4, "max_wait_ms": 5},
                }
            ],
        }
    )


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


@contextlib.asynccontextmanager
async def running(service: Service) -> AsyncIterator[Service]:
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.started.wait(), 60)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


class Gate:
    """Wraps the real task so a test can hold its inference thread, as a hung onnxruntime call would."""

    def __init__(self, task: Any) -> None:
        self.task, self.name, self.open = task, task.name, threading.Event()
        self.open.set()

    def process(self, items: Sequence[Any]) -> list[Result]:
        assert self.open.wait(60)
        result: list[Result] = self.task.process(items)
        return result


def block(t_ns: int) -> Reading:
    samples = np.sin(np.arange(2048, dtype=np.float32) / 5)
    return Reading("gw1.x", t_ns, samples, "good", "g", 12_000.0)


async def test_metrics_are_valid_exposition_and_escape_hostile_labels(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: the text is formatted in a worker thread, from what the event loop gathered (formatting 5,000 tags
    takes ~30 ms, which on the loop would delay every poll and frame)."""
    port = free_port()
    service = Service(deployment(mosquitto.port, tmp_path, f"127.0.0.1:{port}"))
    formatted_in: list[int] = []

    def spy(scrape: metrics.Scrape, registry: Any) -> bytes:
        formatted_in.append(threading.get_ident())
        return real(scrape, registry)

    real = metrics.exposition
    monkeypatch.setattr(metrics, "exposition", spy)
    async with running(service):
        hostile = 'degC"} 1\nedge_runtime_forged{x="y'
        await service._route(Reading('gw1.t"\nforged', 1, np.array(21.5), "good", hostile))
        await service.pipelines[0].feed(block(10**18))
        await until(lambda: service.pipelines[0].stats["inputs"] >= 1, what="one window processed")
        nan = block(10**18 + 10**9)
        nan.value[5] = np.nan  # a window the task refuses and counts
        await service.pipelines[0].feed(nan)
        task_stats = service.pipelines[0].task.stats  # type: ignore[attr-defined]
        await until(lambda: task_stats["invalid_windows"] >= 1, what="the NaN window counted")
        await until(lambda: service.metrics is not None and service.metrics.bound.is_set(), what="metrics bound")
        status, text = await http_get(port, "/metrics")
        gathered, inputs = metrics.gather(service), service.pipelines[0].stats["inputs"]
        service.pipelines[0].stats["inputs"] += 5  # after the gathering: not in that scrape
        later = {f.name: f for f in text_string_to_metric_families(real(gathered, service.registry).decode())}
    assert formatted_in and threading.get_ident() not in formatted_in
    assert later["edge_runtime_pipeline_inputs"].samples[0].value == inputs >= 1
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}  # a strict parser accepts all of it
    assert not any("forged" in name for name in families)
    (gauge,) = families["edge_runtime_reading"].samples
    assert gauge.labels == {"stream": 'gw1.t"\nforged', "unit": hostile, "quality": "good"} and gauge.value == 21.5
    latency = families["edge_runtime_pipeline_latency_seconds"]
    assert latency.type == "histogram"
    count = [s for s in latency.samples if s.name.endswith("_count")]
    assert count[0].value >= 1
    assert "# HELP edge_runtime_pipeline_inputs_total" in text
    (refused,) = families["edge_runtime_pipeline_task_invalid_windows"].samples
    assert refused.labels == {"pipeline": service.pipelines[0].id} and refused.value >= 1
    assert "# TYPE edge_runtime_pipeline_inputs_total counter" in text
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["edge_runtime_build_info"].samples[0].labels["version"]


async def test_healthz_and_the_watchdog_follow_pipeline_progress(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A held inference thread makes /healthz 503 with the reason and stops WATCHDOG=1; releasing it heals both."""
    port = free_port()
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setblocking(False)
    messages: list[str] = []

    def received() -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(sock.recv(4096).decode())
        return messages

    env = {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"}  # pets every 0.2 s
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        service = Service(deployment(mosquitto.port, tmp_path, f"127.0.0.1:{port}", progress_timeout_s=1.0))
        service.load()
        gate = Gate(service.pipelines[0].task)
        service.pipelines[0].task = gate
        async with running(service):
            await until(lambda: service.metrics is not None and service.metrics.bound.is_set(), what="bound")
            assert (await http_get(port, "/healthz"))[0] == 200
            await until(lambda: any(m.startswith("WATCHDOG=1") for m in received()), what="a watchdog pet")
            gate.open.clear()
            await service.pipelines[0].feed(block(10**18))
            await until(lambda: service.pipelines[0].stalled_s() > 1.0, what="the pipeline stalled")
            status, reason = await http_get(port, "/healthz")
            assert status == 503 and "pipeline vib" in reason and "waiting" in reason
            received()
            n = len(messages)
            await until(lambda: len(received()) >= n + 3, what="three more notifications")
            assert not any(m.startswith("WATCHDOG=1") for m in messages[n + 1 :])  # withheld while stalled
            assert any(m.startswith("STATUS=stalled: pipeline vib") for m in messages[n:])
            gate.open.set()
            await until(lambda: service.pipelines[0].stats["inputs"] >= 1, what="the held batch finished")
            await until(lambda: any(m.startswith("WATCHDOG=1") for m in received()[n + 3 :]), what="pets again")
            assert (await http_get(port, "/healthz"))[0] == 200
    finally:
        sock.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def test_a_busy_metrics_port_does_not_stop_the_service(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The service starts and processes without metrics, says so once, and binds when the port frees up."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    service = Service(deployment(mosquitto.port, tmp_path, f"127.0.0.1:{port}"))
    async with running(service):
        await until(lambda: any("event=metrics_bind_failed" in m for m in caplog.messages), what="the bind failure")
        await service.pipelines[0].feed(block(10**18))
        await until(lambda: service.pipelines[0].stats["inputs"] >= 1, what="processing without metrics")
        holder.close()
        await until(lambda: service.metrics is not None and service.metrics.bound.is_set(), 30, "bound later")
        status, text = await http_get(port, "/metrics")
    assert status == 200 and "edge_runtime_pipeline_inputs_total" in text
    assert sum("event=metrics_bind_failed" in m for m in caplog.messages) == 1
