"""Weld inspection throughput: frames/s of `WeldInspectorTask.process` on 640x640 frames, fp32 against int8.

Everything a deployment pays per frame is inside the timing: resize, one batched inference, region
post-processing and the decision. Both variants run in this one process at batch 1 and 8, so the int8/fp32
ratio is measured under the same load.

    .venv/bin/python benchmarks/bench_weld.py --json bench-weld.json [--threads 1] [--seconds 4] [--quick]
        [--compare /path/to/other/model_dir]   # e.g. a previous version, timed in the same process
        [--recording FILE]   # a flight recording: the line's own frames (of the recorded weld pipeline)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from adapters.base import Frame
from edge_runtime.inference import load_model
from edge_runtime.tasks.weld_inspector import WeldInspectorConfig, WeldInspectorTask
from edge_runtime.tools.bench_recording import add_recording_option, recorded_inputs

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "weld_photos" / "images"


def frames(n: int, size: int = 640) -> list[Frame]:
    """Real weld photographs when the data set is present, else textured noise of the same size."""
    import cv2

    files = sorted(DATA.glob("*.jpg")) if DATA.is_dir() else []
    files = files[:: max(1, len(files) // n)][:n]
    out = []
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.imread(str(files[i])) if i < len(files) else None
        if img is None:
            img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 3)
        out.append(Frame(f"cam{i}", 0, np.ascontiguousarray(cv2.resize(img, (size, size)), dtype=np.uint8)))
    return out


def run(task: WeldInspectorTask, batch: list[Frame], seconds: float) -> float:
    task.process(batch)  # warm-up
    n = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        task.process(batch)
        n += len(batch)
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--seconds", type=float, default=4.0, help="timing per configuration")
    ap.add_argument(
        "--quick", action="store_true", help="short run (0.5 s per configuration), as `edge-runtime bench --quick` asks"
    )
    ap.add_argument("--compare", type=Path, help="another weld_inspector model directory, timed alongside")
    add_recording_option(ap)
    args = ap.parse_args()
    seconds = min(args.seconds, 0.5) if args.quick else args.seconds
    pool = frames(8)
    inputs: dict[str, Any] = {"data": "weld photographs" if DATA.is_dir() else "textured noise"}
    if args.recording is not None:
        recorded, inputs = recorded_inputs(args.recording, "weld_inspector", 8)
        pool = [f for f in recorded if isinstance(f, Frame)] or pool
        pool = (pool * 8)[:8]  # batch 8 needs eight frames
    results: dict[str, Any] = {
        "benchmark": "weld_inspector",
        "frame": "640x640x3 uint8" if args.recording is None else "recorded",
        "threads": args.threads,
        "seconds_per_configuration": seconds,
        "machine": platform.machine(),
        "inputs": inputs,
        "fps": {},
    }
    models: list[tuple[str, str | Path]] = [("", "weld_inspector")]
    if args.compare:
        models.append(("compare_", args.compare))
    for prefix, model in models:
        for variant in ("fp32", "int8"):
            runner = load_model(model, variant=variant, intra_op_threads=args.threads)
            results.setdefault("models", {})[prefix + variant] = runner.ident
            task = WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector"), runner)
            for bs in (1, 8):
                fps = run(task, pool[:bs], seconds)
                results["fps"][f"{prefix}{variant}_b{bs}"] = round(fps, 1)
                print(f"{runner.ident} {variant} batch={bs} frames/s={fps:.1f}", flush=True)
    fps = results["fps"]
    results["ratio_int8_over_fp32"] = {f"b{bs}": round(fps[f"int8_b{bs}"] / fps[f"fp32_b{bs}"], 3) for bs in (1, 8)}
    print("int8/fp32:", results["ratio_int8_over_fp32"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
