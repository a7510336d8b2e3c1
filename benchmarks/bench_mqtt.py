"""MQTT ingest: messages/s and CPU-s per 1k messages of `MqttSource` (what the service runs for an `mqtt` device),
scalar and waveform payloads, against `mosquitto_sub` reading the same topics at the same time.

A real mosquitto on 127.0.0.1 (`edge_runtime.tools.broker`); a publisher in a child process sends bursts as fast as
paho can (QoS 0, eight sensors' topics): scalars as the JSON documents a PLC gateway sends (`{"value": 21.53,
"t_ns": ...}`), waveforms as 0.1 s blocks of a real CWRU recording at 12 kHz (`f32le`, 4.8 kB, MQTT 5 user
properties `rate_hz`/`t0_ns`, as `configs/devices/vibration_gateway_mqtt.yaml`). Both consumers are subscribed for
the whole run: `MqttSource.stream()` in this process (each message decoded into a `Reading`) and `mosquitto_sub
-V mqttv5 -F '%U %l'` (it receives every payload and prints one line with its arrival time and length, decoding
nothing) as the floor. Per burst and consumer: messages/s between its first and last message, CPU-s per 1k
messages (this process's CPU time; the subprocess's from /proc/PID/task/*/schedstat, ns resolution), and the
share of the burst received. The publisher and the broker are other processes, so neither is counted. On a
loaded machine compare the ratios: both consumers see the same burst under the same load.

    .venv/bin/python benchmarks/bench_mqtt.py --json /tmp/bench_mqtt.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any

import numpy as np

from adapters.base import Reading
from adapters.mqtt.config import MqttConfig
from adapters.mqtt.source import MqttSource
from edge_runtime.tools.bench_schema import Figure, figure, write_result
from edge_runtime.tools.broker import Mosquitto

SENSORS = 8
KINDS = ("scalar", "waveform")
FLOOR = "mosquitto_sub, same messages"
IDLE_S = 1.0  # a consumer that received nothing for this long after the burst was sent has all it will get


def source_config(port: int) -> MqttConfig:
    return MqttConfig.model_validate(
        {
            "kind": "mqtt",
            "id": "gw1",
            "port": port,
            "queue_size": 2000,
            "subscriptions": [
                {"topic": "bench/+/+/temp", "stream": "{id}.{levels[2]}.temp", "unit": "degC"},
                {"topic": "bench/+/+/vib", "codec": "f32le", "stream": "{id}.{levels[2]}.vib", "unit": "g"},
            ],
        }
    )


def _publisher(port: int, commands: PipeEnd) -> None:
    """Child process: publish a burst of `n` messages of a kind on each command; reply with its seconds."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from adapters.base import dumps
    from adapters.mqtt.codec import encode_f32le
    from edge_runtime.tools.datasets import load_excerpt

    rec = load_excerpt()[0]
    block = rec.signal[:1200].astype(np.float32)
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        while True:
            command = commands.recv()
            if command is None:
                return
            kind, n = command
            t0, t0_ns = time.perf_counter(), time.time_ns()
            info = None
            for i in range(n):
                sensor = i % SENSORS
                last = i == n - 1  # QoS 1, so the burst's end is known to have reached the broker
                if kind == "scalar":
                    doc = {"value": 20.0 + (i % 1000) / 100, "t_ns": t0_ns + i * 1000}
                    info = client.publish(f"bench/line1/m{sensor}/temp", dumps(doc), qos=1 if last else 0)
                else:
                    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    props.UserProperty = [("rate_hz", "12000.0"), ("t0_ns", str(t0_ns + i * 100_000_000))]
                    info = client.publish(
                        f"bench/line1/m{sensor}/vib", encode_f32le(block), qos=1 if last else 0, properties=props
                    )
            if info is not None:
                info.wait_for_publish(30)
            commands.send(time.perf_counter() - t0)
    finally:
        client.loop_stop()
        client.disconnect()


def task_cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process, in ns (/proc/PID/task/*/schedstat: first field)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[0])
    return total


class FloorSubscriber:
    """`mosquitto_sub` on the same topics, printing `arrival_epoch_s payload_length` per message into a file."""

    def __init__(self, port: int, out: Path) -> None:
        binary = shutil.which("mosquitto_sub")
        if binary is None:
            raise SystemExit("mosquitto_sub is not installed: apt-get install mosquitto-clients (make system-deps)")
        self.out = out
        self._fh = out.open("wb")
        topics = ["-t", "bench/+/+/temp", "-t", "bench/+/+/vib"]
        self.proc = subprocess.Popen(
            [binary, "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-F", "%U %l", *topics],
            stdout=self._fh,
            stderr=subprocess.DEVNULL,
        )
        self._offset = 0

    def take(self) -> list[tuple[float, int]]:
        """The messages printed since the last call (whole lines only)."""
        with self.out.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        lines = data[:end].decode().splitlines()
        return [(float(t), int(n)) for t, n in (line.split() for line in lines)]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._fh.close()


def _rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


async def _pump(stream: AsyncIterator[Reading], arrivals: list[float]) -> None:
    """Consume the source's stream for the whole run, noting when each reading came out of it."""
    async for _ in stream:
        arrivals.append(time.perf_counter())


async def _settled(count: Callable[[], int], n: int, sent: asyncio.Future[float]) -> None:
    """Until `count()` reaches `n`, or the burst was sent and nothing more arrived for IDLE_S."""
    last, changed = count(), time.monotonic()
    while count() < n:
        await asyncio.sleep(0.05)
        if count() != last:
            last, changed = count(), time.monotonic()
        elif sent.done() and time.monotonic() - changed > IDLE_S:
            return


async def burst(
    source: MqttSource, arrivals: list[float], floor: FloorSubscriber, publisher: PipeEnd, kind: str, n: int
) -> dict[str, float]:
    """One burst of `n` messages: each consumer's messages/s, CPU-s per 1k messages and share received."""
    loop = asyncio.get_running_loop()
    floor.take()
    start = len(arrivals)
    cpu0, floor_cpu0, dropped0 = time.process_time(), task_cpu_ns(floor.proc.pid), source.stats["dropped"]
    publisher.send((kind, n))
    sent = loop.run_in_executor(None, publisher.recv)
    await _settled(lambda: len(arrivals) - start, n, sent)
    cpu = time.process_time() - cpu0
    times = arrivals[start:]
    got: list[tuple[float, int]] = []

    def floor_count() -> int:
        got.extend(floor.take())
        return len(got)

    await _settled(floor_count, n, sent)
    floor_cpu = (task_cpu_ns(floor.proc.pid) - floor_cpu0) / 1e9
    publish_s = await sent
    return {
        "source_msgs_per_s": _rate(times),
        "source_cpu_s_per_1k": cpu / max(1, len(times)) * 1000,
        "source_received": len(times) / n,
        "source_dropped": float(source.stats["dropped"] - dropped0),
        "floor_msgs_per_s": _rate([t for t, _ in got]),
        "floor_cpu_s_per_1k": floor_cpu / max(1, len(got)) * 1000,
        "floor_received": len(got) / n,
        "published_msgs_per_s": n / publish_s,
    }


async def run(port: int, floor: FloorSubscriber, publisher: PipeEnd, sizes: dict[str, int], rounds: int) -> Any:
    source = MqttSource(source_config(port))
    await source.open()
    arrivals: list[float] = []
    pump = asyncio.create_task(_pump(source.stream(), arrivals))
    try:
        for kind in KINDS:  # warm-up: connections, caches, and both subscriptions known to be in place
            await burst(source, arrivals, floor, publisher, kind, 200)
        runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        for _ in range(rounds):
            for kind in KINDS:
                runs[kind].append(await burst(source, arrivals, floor, publisher, kind, sizes[kind]))
        return runs
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await source.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--scalars", type=int, default=50_000, help="scalar messages per burst")
    ap.add_argument("--blocks", type=int, default=10_000, help="waveform blocks per burst")
    ap.add_argument("--rounds", type=int, default=5, help="bursts of each kind")
    ap.add_argument("--quick", action="store_true", help="short run (CI smoke)")
    args = ap.parse_args()
    sizes = {"scalar": 10_000, "waveform": 2_000} if args.quick else {"scalar": args.scalars, "waveform": args.blocks}
    rounds = 2 if args.quick else args.rounds

    ctx = multiprocessing.get_context("spawn")
    with Mosquitto() as broker, tempfile.TemporaryDirectory(prefix="edge-runtime-bench-mqtt-") as tmp:
        floor = FloorSubscriber(broker.port, Path(tmp) / "mosquitto_sub.txt")
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=_publisher, args=(broker.port, theirs), daemon=True)
        child.start()
        try:
            runs = asyncio.run(run(broker.port, floor, ours, sizes, rounds))
            ours.send(None)
            child.join(10)
        finally:
            if child.is_alive():
                child.terminate()
            floor.close()
        broker_log = broker.log_file.read_text(errors="replace") if broker.log_file.exists() else ""
    figures: list[Figure] = []
    for kind in KINDS:
        r = runs[kind]
        figures += [
            figure(
                f"mqtt.{kind}.msgs_per_s",
                "msgs/s",
                [x["source_msgs_per_s"] for x in r],
                baseline=(FLOOR, [x["floor_msgs_per_s"] for x in r]),
            ),
            figure(
                f"mqtt.{kind}.cpu_s_per_1k_msgs",
                "CPU-s/1k msgs",
                [x["source_cpu_s_per_1k"] for x in r],
                baseline=(FLOOR, [x["floor_cpu_s_per_1k"] for x in r]),
                higher_is_better=False,
            ),
            figure(
                f"mqtt.{kind}.received",
                "share of burst",
                [x["source_received"] for x in r],
                baseline=(FLOOR, [x["floor_received"] for x in r]),
            ),
        ]
    write_result(
        args.json,
        "bench_mqtt",
        figures,
        details={
            "broker": "mosquitto on 127.0.0.1 (child process)",
            "burst_messages": sizes,
            "publisher_msgs_per_s": {
                k: round(float(np.median([x["published_msgs_per_s"] for x in runs[k]]))) for k in KINDS
            },
            "source_dropped_queue_full": {k: sum(x["source_dropped"] for x in runs[k]) for k in KINDS},
            # mosquitto drops QoS 0 messages for a client whose outgoing queue is full (max_queued_messages)
            "broker_drop_notices": sum("dropped" in line for line in broker_log.splitlines()),
            "payloads": {
                "scalar": "JSON document value+t_ns",
                "waveform": "f32le 1200 samples, MQTT 5 user properties",
            },
        },
    )


if __name__ == "__main__":
    main()
