"""Faults on the live path, each next to a baseline run of the same length, side by side; ratios in JSON.

- `outage`: the gateway's broker is down for `--down-s` (60 s by default, as in the issue) in the middle of a run;
  the service must resume on its own. Reports results/s after the outage vs before, reconnects, and that every
  result stored has a `seq` without gaps.
- `hostile`: `--bad-per-s` hostile payloads a second (the issue's: `{"value":1,"quality":[]}`, a 400-digit
  integer, `"["*100000`, `rate_hz` Infinity, `inf` in f32le...) on the gateway's topics while real recordings play.
  Reports good results/s with them vs without (the issue measured 11.7/s falling to 0.5/s before the guard).

    python benchmarks/faults.py [--scenario outage|hostile|both] [--seconds 30] [--down-s 60] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from adapters.mqtt.codec import encode_f32le
from adapters.mqtt.simulator import GatewayStream, VibrationGatewayConfig, VibrationGatewaySimulator, Waveform
from edge_runtime.config import Deployment
from edge_runtime.service import Service
from edge_runtime.tools.broker import Mosquitto
from edge_runtime.tools.datasets import load_excerpt

HOSTILE: list[bytes] = [
    b'{"value":1,"quality":[]}',
    b'{"value":1,"ts":1e300}',
    b"9" * 400,
    b"[" * 100_000,
    b'{"value":[1,2],"rate_hz":Infinity}',
    b'{"value":[1,2],"rate_hz":1e-300}',
    b"[1,null,2]",
]


def deployment(port: int, outbox: Path) -> Deployment:
    return Deployment.model_validate(
        {
            "service": {"metrics_listen": None, "outbox": {"path": str(outbox)}},
            "devices": [
                {
                    "id": "gw1",
                    "kind": "mqtt",
                    "port": port,
                    "subscriptions": [
                        {"topic": "plant/line1/+/vib", "codec": "f32le", "stream": "{id}.{levels[2]}"},
                        {"topic": "plant/line1/+/doc", "stream": "{id}.{levels[2]}"},
                    ],
                }
            ],
            "pipelines": [
                {
                    "id": "vibration",
                    "inputs": ["gw1.*"],
                    "task": {"kind": "vibration_anomaly"},
                    "model": {"name": "vibration_anomaly"},
                }
            ],
        }
    )


@contextlib.asynccontextmanager
async def gateway(port: int) -> AsyncIterator[None]:
    recordings: dict[str, Waveform] = {}
    for rec in load_excerpt():
        recordings.setdefault(rec.fault.replace("_", ""), Waveform(rec.signal, rec.fs_hz))
    sim = VibrationGatewaySimulator(
        VibrationGatewayConfig(
            id="gw-sim",
            port=port,
            streams=[GatewayStream(stream=s) for s in recordings],
            topic="plant/line1/{stream}/vib",
        ),
        recordings,
    )
    await sim.open()
    task = asyncio.create_task(sim.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.close()


async def hostile_publisher(port: int, per_s: float) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        i = 0
        while True:
            payload = HOSTILE[i % len(HOSTILE)]
            if i % (len(HOSTILE) + 1) == len(HOSTILE):
                client.publish("plant/line1/pump1/vib", encode_f32le([1.0, float("inf")]))
            else:
                client.publish("plant/line1/pump1/doc", payload)
            i += 1
            await asyncio.sleep(1 / per_s)
    finally:
        client.loop_stop()
        client.disconnect()


async def run_one(seconds: float, *, bad_per_s: float = 0.0, down_s: float = 0.0) -> dict[str, Any]:
    """One service run; with `down_s`, the broker stops after a third of `seconds` for `down_s`."""
    with Mosquitto() as broker, tempfile.TemporaryDirectory() as tmp:
        service = Service(deployment(broker.port, Path(tmp) / "o.sqlite"))
        stamps: list[tuple[float, int]] = []
        service.result_observers.append(lambda r: stamps.append((time.monotonic(), r.seq)))
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        await service.started.wait()
        t0 = time.monotonic()
        outage: tuple[float, float] | None = None
        async with gateway(broker.port):
            bad = asyncio.create_task(hostile_publisher(broker.port, bad_per_s)) if bad_per_s else None
            if down_s:
                await asyncio.sleep(seconds / 3)
                broker.stop()
                down_at = time.monotonic()
                await asyncio.sleep(down_s)
                broker.start()
                outage = (down_at - t0, time.monotonic() - t0)
                await asyncio.sleep(seconds * 2 / 3)
            else:
                await asyncio.sleep(seconds)
            if bad is not None:
                bad.cancel()
        elapsed = time.monotonic() - t0
        stop.set()
        await runner
    seqs = [s for _, s in stamps]
    out: dict[str, Any] = {
        "seconds": round(elapsed, 1),
        "results": len(seqs),
        "results_per_s": len(seqs) / elapsed,
        "seq_gapless": seqs == list(range(1, len(seqs) + 1)),
        "malformed": service.sources[0].stats["malformed"],
        "reconnects": service.sources[0].stats["reconnects"],
    }
    if outage is not None:
        before = [t for t, _ in stamps if t - t0 < outage[0]]
        after = [t for t, _ in stamps if t - t0 > outage[1] + 5]  # 5 s to reconnect and refill windows
        out["before_per_s"] = len(before) / outage[0]
        out["after_per_s"] = len(after) / max(1e-9, elapsed - outage[1] - 5)
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["outage", "hostile", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--down-s", type=float, default=60.0)
    parser.add_argument("--bad-per-s", type=float, default=5.0)
    parser.add_argument("--json", default="faults.json")
    args = parser.parse_args()
    report: dict[str, Any] = {"command": "python benchmarks/faults.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "json")}  # fmt: skip
    baseline = await run_one(args.seconds)
    report["baseline"] = baseline
    if args.scenario in ("hostile", "both"):
        hostile = await run_one(args.seconds, bad_per_s=args.bad_per_s)
        hostile["ratio_vs_baseline"] = hostile["results_per_s"] / baseline["results_per_s"]
        report["hostile"] = hostile
    if args.scenario in ("outage", "both"):
        outage = await run_one(args.seconds, down_s=args.down_s)
        outage["after_vs_before"] = outage["after_per_s"] / max(1e-9, outage["before_per_s"])
        report["outage"] = outage
    Path(args.json).write_text(json.dumps(report, indent=1))  # noqa: ASYNC240 (once, at the end)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
