"""Weld inspection speed: the model fp32/int8 at batch 1, 4 and 8 vs bare onnxruntime, and the whole task end to end
(640x640 camera frame -> resize -> one batched inference -> NMS -> decision) vs bare onnxruntime on the same tensors
(with `flip_average`, the frames and their mirrors), and the task with the other `flip_average` choice.

Everything runs on one onnxruntime intra-op thread and one OpenCV thread (`--threads` changes onnxruntime's) in
alternating rounds, so load from other processes hits a figure and its baseline alike. Frames are the real weld
photographs at the camera's resolution (640x640; textured noise of that size when the data set is absent). The
bare baseline is the verified session's `run` on the already resized batch: what the runtime adds around the model
is the gap. Rates are per wall second and per CPU second of this process (the one that holds on a shared machine).

    .venv/bin/python benchmarks/bench_weld.py --json bench-weld.json [--quick] [--threads 1] [--seconds 1]
        [--compare /path/to/other/model_dir]   # e.g. a previous version, timed in the same rounds
        [--recording FILE]   # a flight recording: the line's own frames (of the recorded weld pipeline)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import Frame
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.tasks.weld_inspector import WeldInspectorConfig, WeldInspectorTask
from edge_runtime.tools.bench_recording import add_recording_option, recorded_inputs
from edge_runtime.tools.bench_schema import Figure, figure, write_result
from edge_runtime.tools.bench_timing import QUICK_ROUNDS_S, Rounds, rate

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "weld_photos" / "images"
MODEL_BATCHES = (1, 4, 8)
E2E_BATCHES = (1, 8)
BARE = "bare onnxruntime, same tensors"


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


def bare(runner: ModelRunner, name: str, x: npt.NDArray[np.uint8], frames: int) -> Callable[[], int]:
    """onnxruntime alone: the verified session's run, without the runner's dict handling or the task around it.
    Counts `frames` camera frames a call (`x` holds their mirrors too with `flip_average`)."""
    session, names = runner.session, [o.name for o in runner.manifest.outputs]
    return lambda: len(session.run(names, {name: x})[0][:frames])


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--seconds", type=float, default=0.5, help="timing per measurement and round")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a smoke check, as `edge-runtime bench --quick` asks: 0.3 s or one call per figure, no warm-up, "
        f"a second round only when the first took under {QUICK_ROUNDS_S:.0f} s",
    )
    ap.add_argument("--compare", type=Path, help="another weld_inspector model directory, timed alongside")
    add_recording_option(ap)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    seconds, n_rounds = (min(args.seconds, 0.3), 2) if args.quick else (args.seconds, 5)
    pool = frames(8)
    inputs: dict[str, Any] = {"data": "weld photographs" if DATA.is_dir() else "textured noise"}
    if args.recording is not None:
        recorded, inputs = recorded_inputs(args.recording, "weld_inspector", 8)
        pool = [f for f in recorded if isinstance(f, Frame)] or pool
        pool = (pool * 8)[:8]  # batch 8 needs eight frames
    models: list[tuple[str, str | Path]] = [("", "weld_inspector")]
    if args.compare:
        models.append(("compare.", args.compare))
    runners: dict[str, ModelRunner] = {}
    tasks: dict[str, WeldInspectorTask] = {}
    for prefix, model in models:
        for v in ("fp32", "int8"):
            runners[prefix + v] = load_model(model, variant=v, intra_op_threads=args.threads)
            tasks[prefix + v] = WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector"), runners[prefix + v])
    # the task with the manifest's other `flip_average` choice, on the same sessions: the speed of that trade-off
    other_flip = not tasks["fp32"].flip_average
    flip_tag = "flip_on" if other_flip else "flip_off"
    for v in ("fp32", "int8"):
        config = WeldInspectorConfig(kind="weld_inspector", flip_average=other_flip)
        tasks[f"{flip_tag}.{v}"] = WeldInspectorTask(config, runners[v])
    batches = sorted(set(MODEL_BATCHES) | set(E2E_BATCHES))
    frame_size = "x".join(str(n) for n in pool[0].image.shape[1::-1])  # width x height
    # the model figures take the frames alone; the end-to-end baseline the tensor the task itself feeds the model
    images = [f.image for f in pool]
    tensors = {b: tasks["fp32"].model_input(images[:b], mirrored=False) for b in batches}
    task_tensors = {b: tasks["fp32"].model_input(images[:b]) for b in batches}
    name = tasks["fp32"].input_name

    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    def timed(fn: Callable[[], int]) -> tuple[float, float]:
        # full runs: at least two calls, so a slow batch still gets a measurement; quick: one (minutes under qemu)
        return rate(fn, seconds, warm_up=not args.quick, least_calls=1 if args.quick else 2)

    rounds = Rounds(n_rounds, args.quick)
    for _ in rounds:
        for key, task in tasks.items():
            runner = task.runner
            for b in batches:
                if key in ("fp32", "int8"):
                    if b in MODEL_BATCHES:
                        x = tensors[b]
                        add(f"model.{key}.{b}", timed(lambda r=runner, x=x: len(r.run({name: x})["reject"]))[0])  # type: ignore[misc]
                        add(f"bare.{key}.{b}.wall", timed(bare(runner, name, x, b))[0])
                    if b in E2E_BATCHES:  # the tensors the task runs: with flip_average, the mirrors too
                        wall, cpu = timed(bare(runner, name, task_tensors[b], b))
                        add(f"bare_task.{key}.{b}.wall", wall)
                        add(f"bare_task.{key}.{b}.cpu", cpu)
                if b in E2E_BATCHES:
                    wall, cpu = timed(lambda t=task, batch=pool[:b]: len(t.process(batch)))  # type: ignore[misc]
                    add(f"e2e.{key}.{b}.wall", wall)
                    add(f"e2e.{key}.{b}.cpu", cpu)

    figures: list[Figure] = []
    for v in ("fp32", "int8"):
        for b in MODEL_BATCHES:
            figures.append(
                figure(
                    f"weld.model.{v}.batch{b}",
                    "frames/s",
                    samples[f"model.{v}.{b}"],
                    baseline=("bare onnxruntime", samples[f"bare.{v}.{b}.wall"]),
                    params={"batch": b, "variant": v},
                )
            )
        # frames_per_call, not batch: the report plots `batch` series on one axis, which is the model's frames/s
        for b in E2E_BATCHES:
            for clock, unit, stem in (
                ("wall", "frames/s", "frames_per_s"),
                ("cpu", "frames/CPU-s", "frames_per_cpu_s"),
            ):
                figures.append(
                    figure(
                        f"weld.e2e.{v}.batch{b}.{stem}",
                        unit,
                        samples[f"e2e.{v}.{b}.{clock}"],
                        baseline=(BARE, samples[f"bare_task.{v}.{b}.{clock}"]),
                        params={
                            "frames_per_call": b,
                            "variant": v,
                            "frame": frame_size,
                            "flip_average": tasks[v].flip_average,
                        },
                    )
                )
        for b in E2E_BATCHES:
            figures.append(
                figure(
                    f"weld.e2e.{v}.batch{b}.{flip_tag}.frames_per_cpu_s",
                    "frames/CPU-s",
                    samples[f"e2e.{flip_tag}.{v}.{b}.cpu"],
                    baseline=("the manifest's flip_average, same frames", samples[f"e2e.{v}.{b}.cpu"]),
                    params={"frames_per_call": b, "variant": v, "flip_average": other_flip},
                )
            )
        if args.compare:
            for b in E2E_BATCHES:
                figures.append(
                    figure(
                        f"weld.compare.e2e.{v}.batch{b}.frames_per_cpu_s",
                        "frames/CPU-s",
                        samples[f"e2e.compare.{v}.{b}.cpu"],
                        baseline=(f"{runners[v].ident}, same frames", samples[f"e2e.{v}.{b}.cpu"]),
                        params={
                            "frames_per_call": b,
                            "variant": v,
                            "model": runners[f"compare.{v}"].ident,
                            "flip_average": tasks[f"compare.{v}"].flip_average,
                        },
                    )
                )

    def median(key: str) -> float:
        return float(np.median(samples[key]))

    def best_batch(v: str) -> int:
        """The batch with the highest median model rate in this run."""
        return max(MODEL_BATCHES, key=lambda b: median(f"model.{v}.{b}"))

    write_result(
        args.json,
        "bench_weld",
        figures,
        details={
            "models": {k: r.ident for k, r in runners.items()},
            "frame": "recorded" if args.recording is not None else "640x640x3 uint8, resized inside the task",
            "model_input": f"{tasks['fp32'].size}x{tasks['fp32'].size}x3 uint8",
            "flip_average": tasks["fp32"].flip_average,
            "inputs": inputs,
            "threads": f"onnxruntime intra-op {args.threads}, OpenCV 1",
            "seconds_per_measurement": seconds,
            "rounds": rounds.done,
            "best_batch": {v: best_batch(v) for v in ("fp32", "int8")},
            "ratio_int8_over_fp32_e2e_cpu": {
                f"b{b}": round(median(f"e2e.int8.{b}.cpu") / median(f"e2e.fp32.{b}.cpu"), 3) for b in E2E_BATCHES
            },
        },
    )


if __name__ == "__main__":
    main()
