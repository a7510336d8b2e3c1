"""Rice sorter speed: model crops/s fp32 vs int8 at several batch sizes, and frames/s of the whole task.

Both variants run side by side in one process, one onnxruntime thread each, in alternating rounds so that load from
other processes hits both alike; the figures that travel between machines are the int8/fp32 ratios. Frames are
composed from real data set photographs laid on a dark plate (10 grains per 1250x500 frame).

    .venv/bin/python benchmarks/bench_rice.py --json /tmp/bench_rice.json [--quick] [--compare /path/to/model_dir]

`--compare` adds another rice_sorter model directory (e.g. the previous version) to the crops/s rounds, so the two
are timed side by side under the same load.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import Frame
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.tasks.rice_sorter import VARIETIES, RiceSorterConfig, RiceSorterTask, SegmentParams, segment

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "rice_grains"


def photos(data: Path, per_variety: int) -> list[npt.NDArray[np.uint8]]:
    import cv2

    out = []
    for variety in VARIETIES:
        for path in sorted((data / variety).glob("*.jpg"))[:per_variety]:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                out.append(np.asarray(img, dtype=np.uint8))
    return out


def compose(imgs: list[npt.NDArray[np.uint8]], rows: int = 2, cols: int = 5) -> npt.NDArray[np.uint8]:
    """A plate with one photograph per 250x250 cell: separate grains as on a singulating chute."""
    frame = np.random.default_rng(0).integers(0, 12, size=(250 * rows, 250 * cols, 3)).astype(np.uint8)
    for k, img in enumerate(imgs[: rows * cols]):
        r, c = divmod(k, cols)
        cell = frame[250 * r : 250 * (r + 1), 250 * c : 250 * (c + 1)]
        np.maximum(cell, img, out=cell)
    return frame


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Items per second of `fn` (which returns how many items it handled) over about `seconds`."""
    fn()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        n += fn()
    return n / elapsed


def run_batch(runner: ModelRunner, x: npt.NDArray[np.uint8]) -> int:
    return len(runner.run({"x": x})["probs"])


def process(task: RiceSorterTask, frames: list[Frame]) -> int:
    return len(task.process(frames))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--quick", action="store_true", help="shorter rounds")
    ap.add_argument("--compare", type=Path, help="another rice_sorter model directory, timed alongside (crops/s)")
    args = ap.parse_args()
    seconds = 0.3 if args.quick else 1.0
    rounds = 2 if args.quick else 3
    runners = {v: load_model("rice_sorter", variant=v) for v in ("fp32", "int8")}
    imgs = photos(args.data, 52)
    timed = dict(runners)
    if args.compare:
        timed |= {f"compare_{v}": load_model(args.compare, variant=v) for v in ("fp32", "int8")}
    crops_by: dict[int, npt.NDArray[np.uint8]] = {}
    for runner in timed.values():  # each model gets crops of its own size, cut by the same segment()
        size = int(runner.manifest.preprocessing["crop_size"])
        if size not in crops_by:
            crops_by[size] = np.concatenate([segment(img, SegmentParams(crop_size=size)).crops for img in imgs])
    batches = (1, 32, 256)
    crops_s: dict[str, dict[int, list[float]]] = {v: {b: [] for b in batches} for v in timed}
    for _ in range(rounds):
        for b in batches:
            for v, runner in timed.items():
                size = int(runner.manifest.preprocessing["crop_size"])
                x = np.ascontiguousarray(crops_by[size][:b])
                crops_s[v][b].append(rate(partial(run_batch, runner, x), seconds))
    best = {v: {b: max(r) for b, r in per.items()} for v, per in crops_s.items()}

    frames = [Frame("chute", i, compose(imgs[i * 10 % len(imgs) :] + imgs)) for i in range(8)]
    n_grains = sum(len(segment(f.image, SegmentParams())) for f in frames)
    tasks = {
        v: RiceSorterTask(RiceSorterConfig(kind="rice_sorter", declared_variety="Arborio", ejector_channels=16), r)
        for v, r in runners.items()
    }
    params = tasks["fp32"].params
    frames_s: dict[str, list[float]] = {v: [] for v in tasks}
    segment_s: list[float] = []
    for _ in range(rounds):
        for v, task in tasks.items():
            frames_s[v].append(rate(partial(process, task, frames), seconds))
        segment_s.append(rate(lambda: sum(1 for f in frames if segment(f.image, params) is not None), seconds))
    report: dict[str, Any] = {
        "benchmark": "rice_sorter",
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "threads": 1,
        "model": {v: r.ident for v, r in timed.items()},
        "crops_per_s": {v: {str(b): round(r) for b, r in per.items()} for v, per in best.items()},
        "ratio_int8_over_fp32": {str(b): round(best["int8"][b] / best["fp32"][b], 3) for b in batches},
        **(
            {
                "ratio_fp32_over_compare_fp32": {
                    str(b): round(best["fp32"][b] / best["compare_fp32"][b], 3) for b in batches
                }
            }
            if args.compare
            else {}
        ),
        "frame": {"width": 1250, "height": 500, "grains_per_frame": n_grains / len(frames), "frames_per_call": 8},
        "frames_per_s": {v: round(max(r), 1) for v, r in frames_s.items()},
        "segment_only_frames_per_s": round(max(segment_s), 1),
        "ratio_frames_int8_over_fp32": round(max(frames_s["int8"]) / max(frames_s["fp32"]), 3),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
