"""Vibration path throughput: windows/s of the task at batch 1 (baseline) vs micro-batches, windowing + resampling
of 12 kHz and 48 kHz blocks, and the outbox's durable write rate. Side by side in one process; ratios in JSON.

    python benchmarks/bench_pipeline.py [--quick] [--json PATH] [--recording FILE]

`--recording FILE` (a flight recording): the task runs on windows cut, as the pipeline cuts them, from the line's
own waveform blocks (those of the recorded vibration pipeline's streams) instead of a bundled bearing recording.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adapters.base import Reading, Result
from edge_runtime.inference import load_model
from edge_runtime.outbox import Outbox
from edge_runtime.pipeline import WindowBuffer
from edge_runtime.tasks.base import Window
from edge_runtime.tasks.vibration_anomaly import VibrationAnomalyConfig, VibrationAnomalyTask
from edge_runtime.tools.bench_recording import add_recording_option, recorded_inputs
from edge_runtime.tools.datasets import load_excerpt


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Items per second of `fn` (which returns how many items it handled), after one warm-up call."""
    fn()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done += fn()
    return done / (time.perf_counter() - t0)


def recorded_windows(path: Path, preprocessing: dict[str, Any]) -> tuple[list[Window], dict[str, Any]]:
    """Up to 128 windows cut by the pipeline's own `WindowBuffer` from the recording's waveform blocks."""
    blocks, about = recorded_inputs(path, "vibration_anomaly", 2_000)
    window, rate_hz = int(preprocessing["window"]), float(preprocessing["rate_hz"])
    buffers: dict[str, WindowBuffer] = {}
    windows: list[Window] = []
    for block in blocks:
        if not isinstance(block, Reading) or block.rate_hz is None:
            continue
        buf = buffers.get(block.stream)
        if buf is None or buf.rate_hz != block.rate_hz:
            buf = buffers[block.stream] = WindowBuffer(
                block.stream, block.rate_hz, rate_hz, window, int(preprocessing.get("hop", window))
            )
        windows += buf.push(block.t_ns, block.value)
        if len(windows) >= 128:
            break
    about["windows"] = len(windows[:128])
    return windows[:128], about


def task_rates(seconds: float, recording: Path | None = None) -> dict[str, Any]:
    runner = load_model("vibration_anomaly", intra_op_threads=1)
    task = VibrationAnomalyTask(VibrationAnomalyConfig(kind="vibration_anomaly"), runner)
    rec = load_excerpt()[0]
    window = int(runner.manifest.preprocessing["window"])
    windows = [Window("s", 0, rec.signal[i * 512 : i * 512 + window].astype(np.float32), 12_000.0) for i in range(128)]
    windows = [w for w in windows if w.samples.size == window]
    out: dict[str, Any] = {"model": runner.ident, "threads": 1, "inputs": {"data": "bundled bearing excerpt"}}
    if recording is not None:
        recorded, out["inputs"] = recorded_windows(recording, runner.manifest.preprocessing)
        windows = recorded or windows
    base = rate(lambda: len(task.process(windows[:1])), seconds)
    out["batch_1_windows_per_s"] = round(base, 1)
    for b in (8, 32, 128):
        batch = (windows * (b // len(windows) + 1))[:b]
        r = rate(lambda batch=batch: len(task.process(batch)), seconds)  # type: ignore[misc]
        out[f"batch_{b}_windows_per_s"] = round(r, 1)
        out[f"batch_{b}_vs_batch_1"] = round(r / base, 2)
    return out


def windowing_rates(seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fs in (12_000.0, 48_000.0):
        block = np.random.default_rng(0).normal(size=int(fs * 0.1)).astype(np.float32)
        buf = WindowBuffer("s", fs, 12_000.0, 2048, 1024)
        t = [0]

        def push(buf: WindowBuffer = buf, block: np.ndarray = block, fs: float = fs, t: list[int] = t) -> int:
            n = len(buf.push(t[0], block))
            t[0] += round(block.size * 1e9 / fs)
            return n

        out[f"windows_per_s_from_{int(fs / 1000)}k_blocks"] = round(rate(push, seconds), 1)
    return out


async def outbox_rate(seconds: float) -> dict[str, Any]:
    """Durable results/s (synchronous=FULL: one fsync per transaction), one result per transaction (baseline)
    vs one micro-batch of 32 per transaction, as the pipeline stores them."""
    out: dict[str, Any] = {}
    fields = Result(
        "vibration",
        "gw1.m1.vib",
        0,
        "ok",
        label="normal",
        score=0.9,
        values={"anomaly_score": 0.1},
        detail={"scores": {"normal": 0.9}},
    )
    for batch in (1, 32):
        with tempfile.TemporaryDirectory() as tmp:
            box = Outbox(Path(tmp) / "o.sqlite", max_rows=10_000_000)
            await box.open()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                n += len(await box.put_many("vibration", [fields] * batch, ["mqtt", "opcua"]))
            out[f"batch_{batch}_results_per_s_two_sinks"] = round(n / (time.perf_counter() - t0), 1)
            await box.close()
    out["batch_32_vs_batch_1"] = round(
        out["batch_32_results_per_s_two_sinks"] / out["batch_1_results_per_s_two_sinks"], 1
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    add_recording_option(parser)
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 4.0
    report = {
        "task": task_rates(seconds, args.recording),
        "windowing": windowing_rates(seconds),
        "outbox": asyncio.run(outbox_rate(seconds)),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
