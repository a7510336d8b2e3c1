"""Operator page: the rice pipeline's throughput with the page open vs closed, side by side in one process.

A camera replays pre-rendered chute frames (real grain photographs, 640x480) at 60 fps, faster than the rice
pipeline can sort them (`drop_oldest`), so results/s is the pipeline's throughput on this machine. Phases
alternate, closed then open, each `--phase-s` long (short and many, so the drifting load of a shared machine hits
both alike); "open" is a client reading the page's server-sent events, so the service renders a snapshot
(latency quantiles, a downscaled JPEG of the latest frame, the rice figures) a few times per second.

Figures: results/s with the page open, its baseline the closed phases of the same run (ratio 1.0 = the page costs
the line nothing), and the process's CPU per result in each mode (the page's client runs in the same process here,
so its cost is counted too; CPU per result holds up better than results/s when other jobs starve the process).
Details keep the per-phase rates, the median of the pairs' ratios, CPU per second and the time to render one
snapshot.

    python benchmarks/bench_ui.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from adapters.base import Result
from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig
from adapters.loopback import free_port
from edge_runtime.config import Deployment
from edge_runtime.service import Service
from edge_runtime.tools.bench_schema import figure, write_result


def deployment(frames: Path, outbox: Path, ui_port: int) -> Deployment:
    return Deployment.model_validate(
        {
            "service": {"metrics_listen": None, "ui_listen": f"127.0.0.1:{ui_port}", "outbox": {"path": str(outbox)}},
            "devices": [{"id": "chute", "kind": "camera", "source": str(frames), "fps": 60, "loop": True}],
            "pipelines": [
                {
                    "id": "rice",
                    "inputs": ["chute.*"],
                    "task": {"kind": "rice_sorter", "declared_variety": "Basmati", "scale_px_per_dataset_px": 0.35},
                    "model": {"name": "rice_sorter"},
                    "batching": {"max_batch": 4, "max_wait_ms": 0, "queue_size": 8},
                    "outputs": [],
                }
            ],
        }
    )


async def watch(url: str, received: list[int]) -> None:
    """A page left open: reads every pushed snapshot, as a browser on the plant network would."""
    async with aiohttp.ClientSession() as http, http.get(url + "events") as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                received.append(len(line))


async def run(phase_s: float, pairs: int) -> dict[str, Any]:
    results = 0

    def count(_: Result) -> None:
        nonlocal results
        results += 1

    # the outbox on tmpfs: its fsyncs would otherwise measure the shared disk (stalls of seconds), not the page
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: ASYNC240 (before anything runs)
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        frames = Path(tmp) / "frames"
        ChuteSimulator(ChuteSimulatorConfig(seed=3)).write_frames(frames, 60, suffix=".jpg")
        (frames / "truth.csv").unlink()
        service = Service(deployment(frames, Path(tmp) / "o.sqlite", free_port()))
        service.result_observers.append(count)
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        await service.started.wait()
        ui = service.ui
        assert ui is not None, "the page did not start"
        await asyncio.sleep(3.0)  # warm-up: first batches, caches
        phases: dict[str, list[float]] = {"closed": [], "open": []}
        cpu: dict[str, list[float]] = {"closed": [], "open": []}  # process CPU seconds per second
        per_result: dict[str, list[float]] = {"closed": [], "open": []}  # process CPU ms per result
        pushed: list[int] = []
        for _ in range(pairs):
            for mode in ("closed", "open"):
                watcher = asyncio.create_task(watch(ui.url, pushed)) if mode == "open" else None
                if watcher is not None:  # the page is open once it has received its first snapshot
                    while not pushed:
                        await asyncio.sleep(0.01)
                start, t0, c0 = results, time.perf_counter(), time.process_time()
                await asyncio.sleep(phase_s)
                elapsed = time.perf_counter() - t0
                phases[mode].append((results - start) / elapsed)
                cpu[mode].append((time.process_time() - c0) / elapsed)
                if results > start:
                    per_result[mode].append(1e3 * (time.process_time() - c0) / (results - start))
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                    while ui.watchers:
                        await asyncio.sleep(0.01)
                    pushed.clear()
        gathered = ui.view.gather({})
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(20):
            ui.view._jpeg.clear()  # as when every snapshot shows a new frame
            ui.view.render(gathered)
        render_ms = (time.perf_counter() - t0) / 20 * 1e3
        render_cpu_ms = (time.thread_time() - c0) / 20 * 1e3  # wall time inflates when other jobs hold the CPU
        snapshots = ui.snapshots
        stop.set()
        await runner
    closed, opened = sum(phases["closed"]), sum(phases["open"])
    pair_ratios = [o / c for o, c in zip(phases["open"], phases["closed"], strict=True) if c > 0]
    return {
        "phase_s": phase_s,
        "pairs": pairs,
        "results_per_s_closed": [round(v, 2) for v in phases["closed"]],
        "results_per_s_open": [round(v, 2) for v in phases["open"]],
        "throughput_ratio_open_vs_closed": round(opened / closed, 3) if closed else None,
        "throughput_ratio_median_of_pairs": round(statistics.median(pair_ratios), 3) if pair_ratios else None,
        "process_cpu_s_per_s_closed": round(statistics.mean(cpu["closed"]), 3),
        "process_cpu_s_per_s_open": round(statistics.mean(cpu["open"]), 3),
        # CPU per result holds up better than results/s when other jobs starve the process of CPU
        "process_cpu_ms_per_result_closed": round(1e3 * sum(cpu["closed"]) / closed, 2) if closed else None,
        "process_cpu_ms_per_result_open": round(1e3 * sum(cpu["open"]) / opened, 2) if opened else None,
        "snapshot_render_ms": round(render_ms, 2),
        "snapshot_render_cpu_ms": round(render_cpu_ms, 2),
        "snapshots_rendered": snapshots,
        "snapshot_interval_s": ui.interval_s,
        "cpu_ms_per_result": per_result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase-s", type=float, default=None)
    parser.add_argument("--pairs", type=int, default=None)
    args = parser.parse_args()
    # short phases, many pairs: a shared machine's load drifts over seconds, so open and closed alternate quickly
    phase_s = args.phase_s or 3.0
    pairs = max(2, args.pairs or (3 if args.quick else 15))
    report = asyncio.run(run(phase_s, pairs))
    per_result = report.pop("cpu_ms_per_result")
    closed = "page closed, same run"
    figures = [
        figure(
            "ui.results_per_s.page_open",
            "results/s",
            report["results_per_s_open"],
            baseline=(closed, report["results_per_s_closed"]),
            params={"phase_s": phase_s},
        )
    ]
    if per_result["open"] and per_result["closed"]:
        figures.append(
            figure(
                "ui.cpu_ms_per_result.page_open",
                "CPU-ms/result",
                per_result["open"],
                baseline=(closed, per_result["closed"]),
                higher_is_better=False,
                params={"phase_s": phase_s},
            )
        )
    write_result(args.json, "bench_ui", figures, details=report)


if __name__ == "__main__":
    main()
