"""Vibration path speed: the pipeline end to end (waveform blocks -> ring buffer -> windows -> micro-batches of 32 ->
task -> results) vs bare onnxruntime on the same windows, the task at batch 1/8/32/128 vs bare onnxruntime, and the
windowing of 12 kHz and 48 kHz blocks vs `cut_windows` alone on the whole signal.

Everything runs on one onnxruntime thread in alternating rounds, so load from other processes hits a figure and its
baseline alike. Blocks are 0.1 s of the bundled bearing recording (12 kHz; the 48 kHz stream is the same signal
interpolated, so the pipeline resamples it to the model's 12 kHz). The outbox's durable write rate is
`bench_outbox.py`'s.

    python benchmarks/bench_pipeline.py [--quick] [--json PATH] [--recording FILE]

`--recording FILE` (a flight recording): the task figures run on windows cut, as the pipeline cuts them, from the
line's own waveform blocks (those of the recorded vibration pipeline's streams), and the end-to-end figures feed
those blocks, instead of the bundled recording.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import Reading
from edge_runtime.dsp import cut_windows, source_window_length
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.pipeline import WindowBuffer
from edge_runtime.tasks.base import Window
from edge_runtime.tasks.vibration_anomaly import VibrationAnomalyConfig, VibrationAnomalyTask
from edge_runtime.tools import bench_timing
from edge_runtime.tools.bench_recording import add_recording_option, recorded_inputs
from edge_runtime.tools.bench_schema import Figure, figure, write_result
from edge_runtime.tools.datasets import load_excerpt

TASK_BATCHES = (1, 8, 32, 128)
MICRO_BATCH = 32  # the demo's vibration pipeline: max_batch 32
BLOCK_S = 0.1
BARE = "bare onnxruntime, same windows"

F32 = npt.NDArray[np.float32]


rate = partial(bench_timing.rate, least_calls=2)  # after a warm-up call, at least two calls a figure


def recorded_blocks(path: Path) -> tuple[list[Reading], dict[str, Any]]:
    """The recording's waveform blocks of the vibration pipeline's streams (those with a sample rate)."""
    blocks, about = recorded_inputs(path, "vibration_anomaly", 2_000)
    return [b for b in blocks if isinstance(b, Reading) and b.rate_hz is not None], about


def synthetic_blocks(signal: F32, fs: float) -> list[Reading]:
    """Consecutive 0.1 s blocks of one stream, time-stamped as a continuous sensor stamps them."""
    n = round(fs * BLOCK_S)
    return [
        Reading(f"s{int(fs / 1000)}k", round(i * 1e9 / fs), signal[i : i + n], rate_hz=fs)
        for i in range(0, signal.size - n + 1, n)
    ]


def cut(blocks: list[Reading], preprocessing: dict[str, Any], limit: int | None = None) -> list[Window]:
    """Windows cut by the pipeline's own `WindowBuffer`, one per stream, from `blocks` in order (up to `limit`)."""
    return cut_counted(blocks, preprocessing, limit)[0]


def cut_counted(
    blocks: list[Reading], preprocessing: dict[str, Any], limit: int | None = None
) -> tuple[list[Window], int]:
    """`cut`, and how many of the blocks it took."""
    window, rate_hz = int(preprocessing["window"]), float(preprocessing["rate_hz"])
    hop = int(preprocessing.get("hop", window))
    buffers: dict[str, WindowBuffer] = {}
    windows: list[Window] = []
    for i, block in enumerate(blocks):
        assert block.rate_hz is not None
        buf = buffers.get(block.stream)
        if buf is None or buf.rate_hz != block.rate_hz:
            buf = buffers[block.stream] = WindowBuffer(block.stream, block.rate_hz, rate_hz, window, hop)
        windows += buf.push(block.t_ns, block.value)
        if limit is not None and len(windows) >= limit:
            return windows[:limit], i + 1
    return windows, len(blocks)


def tensors(windows: list[Window], batch: int) -> list[F32]:
    """The model's input for `windows` in micro-batches of `batch`, as the task builds it."""
    out = []
    for i in range(0, len(windows), batch):
        chunk = windows[i : i + batch]
        out.append(np.stack([w.samples for w in chunk]).astype(np.float32)[:, None, :])
    return out


def bare(runner: ModelRunner, xs: list[F32]) -> Callable[[], int]:
    """onnxruntime alone: the verified session's run on prepared tensors, without the runner or the task."""
    session, names = runner.session, [o.name for o in runner.manifest.outputs]
    name = runner.manifest.inputs[0].name
    return lambda: sum(len(session.run(names, {name: x})[0]) for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    add_recording_option(parser)
    args = parser.parse_args()
    seconds, rounds = (0.3, 2) if args.quick else (0.6, 5)
    runner = load_model("vibration_anomaly", intra_op_threads=1)
    task = VibrationAnomalyTask(VibrationAnomalyConfig(kind="vibration_anomaly"), runner)
    pre = dict(runner.manifest.preprocessing)
    window, model_hz, hop = int(pre["window"]), float(pre["rate_hz"]), int(pre.get("hop", pre["window"]))
    signal = load_excerpt()[0].signal.astype(np.float32)  # 12 kHz, 3 s
    up = np.interp(np.arange(signal.size * 4) / 4.0, np.arange(signal.size), signal).astype(np.float32)
    # "line": the bundled 12 kHz stream, or the recording's blocks; "48k": always synthetic (the resampling path)
    synthetic = {"12k": synthetic_blocks(signal, 12_000.0), "48k": synthetic_blocks(up, 48_000.0)}
    streams: dict[str, list[Reading]] = {"line": synthetic["12k"], "48k": synthetic["48k"]}
    line = "bundled excerpt, 12 kHz"
    inputs: dict[str, Any] = {"data": "bundled bearing excerpt (12 kHz; 48 kHz interpolated)"}
    windows = cut(streams["line"], pre)
    if args.recording is not None:
        blocks, inputs = recorded_blocks(args.recording)
        recorded, used = cut_counted(blocks, pre, 128)
        inputs["windows"] = len(recorded)
        if recorded:
            windows = recorded
            streams["line"] = blocks[:used]  # the blocks that give those windows
            line = "recorded blocks"

    samples: dict[str, list[float]] = {}

    def add(key: str, wall_cpu: tuple[float, float]) -> None:
        samples.setdefault(f"{key}.wall", []).append(wall_cpu[0])
        samples.setdefault(f"{key}.cpu", []).append(wall_cpu[1])

    def e2e(blocks: list[Reading]) -> int:
        """Blocks through fresh ring buffers, windows in micro-batches through the task, as a pipeline runs them."""
        buffers: dict[str, WindowBuffer] = {}
        pending: list[Window] = []
        done = 0
        for block in blocks:
            assert block.rate_hz is not None
            buf = buffers.get(block.stream)
            if buf is None or buf.rate_hz != block.rate_hz:
                buf = buffers[block.stream] = WindowBuffer(block.stream, block.rate_hz, model_hz, window, hop)
            pending += buf.push(block.t_ns, block.value)
            while len(pending) >= MICRO_BATCH:
                done += len(task.process(pending[:MICRO_BATCH]))
                pending = pending[MICRO_BATCH:]
        return done + len(task.process(pending))

    stream_windows = {k: cut(blocks, pre) for k, blocks in streams.items()}
    signals = {"12k": (signal, 12_000.0), "48k": (up, 48_000.0)}
    for _ in range(rounds):
        for b in TASK_BATCHES:
            batch = (windows * (b // len(windows) + 1))[:b]
            add(f"task.{b}", rate(lambda batch=batch: len(task.process(batch)), seconds))  # type: ignore[misc]
            add(f"task_bare.{b}", rate(bare(runner, tensors(batch, b)), seconds))
        for k, blocks in streams.items():
            add(f"e2e.{k}", rate(lambda blocks=blocks: e2e(blocks), seconds))  # type: ignore[misc]
            add(f"e2e_bare.{k}", rate(bare(runner, tensors(stream_windows[k], MICRO_BATCH)), seconds))
        for k, (x, fs) in signals.items():
            n_src, hop_src = source_window_length(window, model_hz, fs), source_window_length(hop, model_hz, fs)
            blocks = synthetic[k]
            add(f"windowing.{k}", rate(lambda blocks=blocks: len(cut(blocks, pre)), seconds))  # type: ignore[misc]
            add(
                f"windowing_bare.{k}",
                rate(lambda x=x, n=n_src, h=hop_src: len(cut_windows(x, n, h, window)), seconds),  # type: ignore[misc]
            )

    figures: list[Figure] = []
    for k in streams:
        for clock, unit, stem in (
            ("wall", "windows/s", "windows_per_s"),
            ("cpu", "windows/CPU-s", "windows_per_cpu_s"),
        ):
            figures.append(
                figure(
                    f"vibration.e2e.{stem}" if k == "line" else f"vibration.e2e_{k}.{stem}",
                    unit,
                    samples[f"e2e.{k}.{clock}"],
                    baseline=(BARE, samples[f"e2e_bare.{k}.{clock}"]),
                    params={"stream": line if k == "line" else "bundled excerpt, 48 kHz", "micro_batch": MICRO_BATCH},
                )
            )
    for b in TASK_BATCHES:
        figures.append(
            figure(
                f"vibration.task.batch{b}",
                "windows/s",
                samples[f"task.{b}.wall"],
                baseline=(BARE, samples[f"task_bare.{b}.wall"]),
                params={"batch": b},
            )
        )
    for k in signals:
        figures.append(
            figure(
                f"vibration.windowing.{k}",
                "windows/s",
                samples[f"windowing.{k}.wall"],
                baseline=("cut_windows alone, whole signal", samples[f"windowing_bare.{k}.wall"]),
                params={"stream": k},
            )
        )

    def median(key: str) -> float:
        return float(np.median(samples[key]))

    write_result(
        args.json,
        "bench_pipeline",
        figures,
        details={
            "model": runner.ident,
            "threads": "onnxruntime intra-op 1",
            "inputs": inputs,
            "window": f"{window} samples at {model_hz:g} Hz, hop {hop}",
            "block_s": BLOCK_S,
            "windows_per_e2e_call": {k: len(w) for k, w in stream_windows.items()},
            "task_batch_vs_batch_1": {
                f"batch_{b}": round(median(f"task.{b}.wall") / median("task.1.wall"), 2) for b in TASK_BATCHES[1:]
            },
            "seconds_per_measurement": seconds,
            "rounds": rounds,
            "outbox": "measured by bench_outbox.py",
        },
    )


if __name__ == "__main__":
    main()
