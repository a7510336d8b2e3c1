"""The spine end to end: a simulated gateway replays real recordings over a real mosquitto, the service windows
them, runs the shipped vibration model and delivers results through the outbox to a second real broker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from adapters.base import Result
from adapters.mqtt.simulator import GatewayStream, VibrationGatewayConfig, VibrationGatewaySimulator, Waveform
from edge_runtime.config import Deployment
from edge_runtime.outbox import Outbox
from edge_runtime.service import Service
from edge_runtime.tools.datasets import load_excerpt
from tests import helpers
from tests.helpers.mosquitto import Mosquitto

until = partial(helpers.until, timeout_s=60.0)


@contextlib.contextmanager
def subscriber(port: int, topic: str) -> Iterator[queue.Queue[dict[str, Any]]]:
    """A plain paho client on the plant broker, as an MES would be; yields once the broker confirmed the
    subscription, so not even the first result can be published before it listens."""
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda c, u, msg: got.put(json.loads(msg.payload))
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert subscribed.wait(30), "the plant subscriber was not confirmed by the broker"
        yield got
    finally:
        client.loop_stop()
        client.disconnect()


def drain(q: queue.Queue[dict[str, Any]], into: list[dict[str, Any]]) -> int:
    """Move what the subscriber has received into `into`; returns how many there are now."""
    while True:
        try:
            into.append(q.get_nowait())
        except queue.Empty:
            return len(into)


def deployment(gateway_port: int, plant_port: int, outbox: Path) -> Deployment:
    return Deployment.model_validate(
        {
            "service": {"metrics_listen": None, "outbox": {"path": str(outbox)}},
            "devices": [
                {
                    "id": "gw1",
                    "kind": "mqtt",
                    "port": gateway_port,
                    "subscriptions": [{"topic": "plant/line1/+/vib", "codec": "f32le", "stream": "{id}.{levels[2]}"}],
                }
            ],
            "pipelines": [
                {
                    "id": "vibration",
                    "inputs": ["gw1.*"],
                    "task": {"kind": "vibration_anomaly"},
                    "model": {"name": "vibration_anomaly"},
                    "batching": {"max_batch": 16, "max_wait_ms": 20},
                    "outputs": ["plant"],
                }
            ],
            "sinks": [
                {
                    "id": "plant",
                    "kind": "mqtt",
                    "port": plant_port,
                    "topic": "edge/{pipeline}/result",
                    "timeout_s": 2.0,
                    "reconnect_min_s": 1.0,
                    "reconnect_max_s": 2.0,
                }
            ],
        }
    )


@pytest.fixture
def plant() -> Iterator[Mosquitto]:
    with Mosquitto() as broker:
        yield broker


@contextlib.asynccontextmanager
async def gateway(port: int, speed: float = 2.0) -> AsyncIterator[dict[str, str]]:
    """Replays one real recording per class (bundled excerpt: works without ../shared)."""
    recordings, truth = {}, {}
    for rec in load_excerpt():
        name = rec.fault.replace("_", "")
        if name not in recordings:
            recordings[name] = Waveform(rec.signal, rec.fs_hz)
            truth[name] = rec.fault
    sim = VibrationGatewaySimulator(
        VibrationGatewayConfig(
            id="gw-sim",
            port=port,
            streams=[GatewayStream(stream=s) for s in recordings],
            topic="plant/line1/{stream}/vib",
            speed=speed,
        ),
        recordings,
    )
    await sim.open()
    task = asyncio.create_task(sim.run())
    try:
        yield truth
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.close()


async def test_results_flow_from_gateway_to_plant_broker(
    mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path
) -> None:
    service = Service(deployment(mosquitto.port, plant.port, tmp_path / "outbox.sqlite"))
    observed: dict[int, dict[str, Any]] = {}
    service.result_observers.append(lambda r: observed.__setitem__(r.seq, r.to_json()))
    stop = asyncio.Event()
    with subscriber(plant.port, "edge/vibration/result") as got:
        runner = asyncio.create_task(service.run(stop))
        await service.started.wait()
        async with gateway(mosquitto.port) as truth:
            received: list[dict[str, Any]] = []
            await until(lambda: drain(got, received) >= 40, what="40 results")
        stop.set()
        await runner
    seqs = [r["seq"] for r in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 1
    first = received[0]
    required = {"pipeline", "seq", "t_ns", "latency_ns", "model", "stream", "label", "scores", "anomaly_score"}
    assert required <= set(first)
    assert first["model"].startswith("vibration_anomaly@")
    assert all(observed[r["seq"]] == r for r in received), "what sinks deliver is the Result's wire form"
    streams = {r["stream"].split(".")[1] for r in received}
    assert streams == set(truth), "every replayed stream produces results (12 kHz and 48 kHz alike)"
    correct = sum(r["label"] == truth[r["stream"].split(".")[1]] for r in received)
    assert correct / len(received) > 0.7
    assert service.pipelines[0].stats["inputs"] >= len(received)


class NetworkLink:
    """A real TCP hop (socat) between the service and the plant broker, cut and restored on demand, so the
    outage hits only the edge box's uplink while the plant-side subscriber stays connected and sees everything."""

    def __init__(self, target_port: int) -> None:
        from tests.helpers import free_port

        self.port = free_port()
        self.target_port = target_port
        self._proc: subprocess.Popen[bytes] | None = None

    def up(self) -> None:
        socat = shutil.which("socat")
        assert socat is not None, "socat is required (make test installs it)"
        self._proc = subprocess.Popen(
            [socat, f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{self.target_port}"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise AssertionError("socat link did not come up")

    def down(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)  # the listener and every forwarded connection
            self._proc.wait(5)
            self._proc = None


async def test_results_made_while_the_uplink_is_down_arrive_after_it_returns(
    mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path
) -> None:
    link = NetworkLink(plant.port)
    link.up()
    service = Service(deployment(mosquitto.port, link.port, tmp_path / "outbox.sqlite"))
    stop = asyncio.Event()
    seen: list[dict[str, Any]] = []
    try:
        with subscriber(plant.port, "edge/vibration/result") as got:
            runner = asyncio.create_task(service.run(stop))
            await service.started.wait()
            async with gateway(mosquitto.port):
                await until(lambda: drain(got, seen) >= 5, what="first results")
                link.down()
                made = service.pipelines[0].stats["inputs"]
                await until(lambda: service.pipelines[0].stats["inputs"] >= made + 20, what="results in outage")
                await until(lambda: service.outbox.pending_rows >= 10, what="results held in the outbox")
                link.up()
                await until(lambda: service.outbox.pending_rows == 0, what="outbox drained")
                last = await service.outbox.last_seq("vibration")
                await until(lambda: drain(got, seen) > 0 and max(r["seq"] for r in seen) >= last, what="newest")
            stop.set()
            await runner
    finally:
        link.down()
    seqs = {r["seq"] for r in seen}
    assert seqs >= set(range(1, max(seqs) + 1)), "no result is lost across the outage"
    assert service.sinks["plant"].stats["delivery_failures"] >= 1


async def test_seq_continues_across_a_restart(mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite"
    last = 0
    for _ in range(2):
        service = Service(deployment(mosquitto.port, plant.port, outbox))
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        await service.started.wait()
        seen: list[int] = []
        service.result_observers.append(lambda r, seen=seen: seen.append(r.seq))  # type: ignore[misc]
        async with gateway(mosquitto.port):
            await until(lambda seen=seen: len(seen) >= 5, what="results")  # type: ignore[misc]
        stop.set()
        await runner
        assert seen[0] > last, "seq never repeats across restarts"
        assert all(a < b for a, b in itertools.pairwise(seen))
        box = Outbox(outbox)
        await box.open()
        last = await box.last_seq("vibration")
        await box.close()
        assert last >= seen[-1]


async def test_write_back_resumes_after_the_plc_restarts(tmp_path: Path) -> None:
    """The Modbus write-back sink is reopened by the service when the PLC comes back (no stale pulses)."""
    from adapters.loopback import free_port
    from adapters.modbus.config import ModbusTcpConfig
    from adapters.modbus.simulator import SimulatedMachine

    port = free_port()
    plc_cfg = ModbusTcpConfig.model_validate(
        {
            "kind": "modbus-tcp",
            "id": "plc",
            "port": port,
            "tags": [{"name": f"c{i}", "table": "coil", "address": 100 + i, "dtype": "bool"} for i in range(4)],
        }
    )
    plc = SimulatedMachine(plc_cfg, vary=False)
    await plc.start(port)
    service = Service(
        Deployment.model_validate(
            {
                "service": {"metrics_listen": None, "outbox": {"path": str(tmp_path / "o.sqlite")}},
                "sinks": [
                    {
                        "id": "plc",
                        "kind": "modbus-write",
                        "connection": {"transport": "tcp", "port": port},
                        "timeout_s": 0.5,
                        "max_age_s": 60,
                        "writable": [{"table": "coil", "start": 100, "end": 103}],
                        "actions": [{"field": "alarm", "table": "coil", "address": 101}],
                    }
                ],
            }
        )
    )
    sink = None
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    try:
        await service.started.wait()
        sink = service.sinks["plc"]
        await service.outbox.put(Result("vib", "m1", time.time_ns(), "alarm", values={"alarm": True}), ["plc"])
        await until(lambda: sink.stats["acknowledged"] == 1, what="first write")
        await plc.stop()
        await service.outbox.put(Result("vib", "m1", time.time_ns(), "ok", values={"alarm": False}), ["plc"])
        await until(lambda: sink.stats["delivery_failures"] >= 2, what="failures while the PLC is away")
        plc = SimulatedMachine(plc_cfg, vary=False)
        await plc.start(port)
        await until(lambda: service.outbox.pending_rows == 0, what="delivery after the restart")
        assert sink.stats["acknowledged"] == 2
    finally:
        stop.set()
        await runner
        await plc.stop()


def readings_past(service: Service, n: int) -> bool:
    return bool(service.stats["samples"] >= n)


async def test_stops_while_polling_a_plc_report_no_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stop lands wherever the Modbus source is in its cycle (three requests at a 10 ms poll here): between two
    requests, with an answer on its way, in the pause. None of them is an outage: no reconnect counted, no
    `source_failed`, no answer logged by pymodbus as one without a request."""
    from adapters.loopback import free_port
    from adapters.modbus.config import ModbusTcpConfig
    from adapters.modbus.simulator import SimulatedMachine

    port = free_port()
    device = {
        "kind": "modbus-tcp",
        "id": "plc",
        "port": port,
        "poll_interval_ms": 10,
        "tags": [{"name": f"t{a}", "address": a} for a in (0, 400, 800)],  # one request each
    }
    plc = SimulatedMachine(ModbusTcpConfig.model_validate(device), vary=True)
    await plc.start(port)
    try:
        for run in range(5):
            service = Service(
                Deployment.model_validate(
                    {
                        "service": {"metrics_listen": None, "outbox": {"path": str(tmp_path / f"o{run}.sqlite")}},
                        "devices": [device],
                    }
                )
            )
            stop = asyncio.Event()
            runner = asyncio.create_task(service.run(stop))
            await service.started.wait()
            await until(partial(readings_past, service, 30 + 7 * run), what="readings")  # stops at varied points
            stop.set()
            await runner
            assert service.sources[0].stats["reconnects"] == 0
    finally:
        await plc.stop()
    assert "source_failed" not in caplog.text
    assert "without a corresponding request" not in caplog.text


async def test_reload_under_load_keeps_unchanged_parts_running_and_seq_whole(
    mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP's path (`reload_file`) while the gateway streams: an invalid file is refused and nothing changes;
    a valid one that adds a sink and changes the pipeline's batching restarts the pipeline and starts the
    sink, while the gateway source and the plant sink keep their one connection; the plant sees every `seq`
    once, in order, across both reloads. Start-up's objects are frozen out of full collections (`heap`) while it
    runs, and the retired pipeline, frozen with them, is freed after the reload."""
    import yaml

    base = deployment(mosquitto.port, plant.port, tmp_path / "outbox.sqlite")
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(base.model_dump(mode="json", exclude_unset=True)))
    service = Service(base)
    stop = asyncio.Event()
    received: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    with (
        subscriber(plant.port, "edge/vibration/result") as got,
        subscriber(plant.port, "audit/vibration") as got_audit,
    ):
        runner = asyncio.create_task(service.run(stop))
        await service.started.wait()
        assert gc.get_freeze_count() > 0
        async with gateway(mosquitto.port):
            await until(lambda: drain(got, received) >= 10, what="results before the reloads")
            source, plant_sink = service.sources[0], service.sinks["plant"]
            old_pipeline = weakref.ref(service.pipelines[0])

            site.write_text(site.read_text().replace("max_batch: 16", "max_batch: many"))
            assert not await service.reload_file(site)
            assert "event=reload_rejected" in caplog.text and "max_batch" in caplog.text
            assert service.pipelines == [old_pipeline()]

            raw = base.model_dump(mode="json", exclude_unset=True)
            raw["pipelines"][0]["batching"]["max_batch"] = 8
            raw["pipelines"][0]["outputs"] = ["plant", "audit"]
            raw["sinks"].append({"id": "audit", "kind": "mqtt", "port": plant.port, "topic": "audit/{pipeline}"})
            site.write_text(yaml.safe_dump(raw))
            assert await service.reload_file(site)
            n = drain(got, received)
            await until(lambda: drain(got, received) >= n + 20, what="results after the reload")
            await until(lambda: drain(got_audit, audit) >= 5, what="the new sink delivering")
            gc.collect()
            assert old_pipeline() is None, "something still holds the retired pipeline"
        stop.set()
        await runner
    assert gc.get_freeze_count() == 0, "a stopped service left the heap frozen"
    assert service.pipelines[0].max_batch == 8
    assert service.sources[0] is source and source.stats["connects"] == 1, "unchanged source kept its session"
    assert service.sinks["plant"] is plant_sink and plant_sink.stats["connects"] == 1, "unchanged sink kept"
    seqs = [r["seq"] for r in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap, no reuse across the reloads"
    assert service.stats["reloads"] == 1 and service.stats["reloads_rejected"] == 1


async def test_many_new_topics_keep_per_stream_state_bounded(
    mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path
) -> None:
    """3x `max_streams` new topics over a real broker (waveform blocks and scalars): every per-stream map stays
    at the limit, the evictions are counted and exported, and the newest streams still produce results."""
    from adapters.mqtt.codec import encode_f32le
    from edge_runtime.metrics import render
    from tests.adapters.mqtt.common import props, raw_client

    limit, n = 40, 120
    d = deployment(mosquitto.port, plant.port, tmp_path / "outbox.sqlite").model_dump()
    d["service"]["max_streams"] = limit
    d["devices"][0]["subscriptions"] += [{"topic": "plant/temp/+", "stream": "{id}.{levels[2]}"}]
    d["pipelines"][0]["batching"] = {"max_batch": 64, "max_wait_ms": 20, "queue_size": 4096}
    service = Service(Deployment.model_validate(d))
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    await service.started.wait()
    await until(lambda: service.sources[0].stats["subscribed"] >= 1, what="subscribed")
    block = encode_f32le(np.sin(np.arange(2048, dtype=np.float32) / 5))
    pipeline = service.pipelines[0]
    with raw_client(mosquitto.port) as (pub, _):
        for i in range(n):
            pub.publish(f"plant/line1/m{i}/vib", block, qos=1, properties=props(rate_hz="12000"))
            pub.publish(f"plant/temp/t{i}", str(i), qos=1).wait_for_publish(20)
        await until(lambda: service.stats["samples"] >= 2 * n, what="every message routed")
        await until(lambda: pipeline.stats["inputs"] >= n, what="a window of every stream processed")
    task_state = pipeline.task.stream_state  # type: ignore[attr-defined]
    sizes = (len(service._routes), len(service.latest), len(pipeline._buffers), len(pipeline._warned), len(task_state))
    text = render(service)
    stop.set()
    await runner
    assert sizes == (limit, limit, limit, limit, limit)
    assert service.stats["routes_evicted"] == 2 * n - limit
    assert service.stats["latest_evicted"] == n - limit
    assert pipeline.stats["buffers_evicted"] == n - limit
    assert pipeline.stats["task_state_evicted"] == n - limit
    assert pipeline.stats["warnings_evicted"] == n - limit  # one "not a waveform" warning per scalar stream
    assert "gw1.m119" in pipeline._buffers and "gw1.t119" in service.latest  # the newest are kept
    assert "edge_runtime_routes_evicted_total" in text and "edge_runtime_pipeline_buffers_evicted_total" in text


def test_frame_pipelines_pin_opencv_threads() -> None:
    """OpenCV's own pool (a thread per core by default) is set from `service.opencv_threads` when a pipeline
    takes frames, so segmentation does not compete with the inference workers behind the operator's back."""
    import cv2

    from edge_runtime.config import validate_file
    from edge_runtime.paths import configs_dir

    deployment, errors = validate_file(configs_dir() / "rice_line.yaml")
    assert deployment is not None, errors
    before = cv2.getNumThreads()
    try:
        for n in (3, 1):
            cv2.setNumThreads(8)
            service = Service(deployment.model_copy(update={"service": deployment.service.model_copy(
                update={"opencv_threads": n})}))  # fmt: skip
            service.load()
            assert cv2.getNumThreads() == n
    finally:
        cv2.setNumThreads(before)
