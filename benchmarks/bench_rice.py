"""Rice sorter speed: the model fp32/int8 at batch 1, 32 and 256 vs bare onnxruntime, and the whole task end to end
(frame -> segmentation -> crops -> model -> eject decisions) vs bare onnxruntime on the same crops.

Everything runs on one core (onnxruntime intra-op threads 1, OpenCV threads 1) in alternating rounds, so load from
other processes hits a figure and its baseline alike. Frames are dense chute frames of the real grain photographs
(`ChuteSimulator`, 640x480, about 48 grains per frame, 4 frames per task call). Rates are given per wall second and
per CPU second of this process: on a shared machine the CPU figure is the one that says what a core can do.

    .venv/bin/python benchmarks/bench_rice.py --json /tmp/bench_rice.json [--quick] [--recording FILE]

`--recording FILE` (a flight recording, `edge-runtime record`): the end-to-end figures use the line's own frames
(the first 40 of the recorded rice pipeline's streams) instead of the simulated chute.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from adapters.base import Frame
from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.tasks.rice_segment import segment
from edge_runtime.tasks.rice_sorter import RiceSorterConfig, RiceSorterTask
from edge_runtime.tools.bench_recording import add_recording_option, recorded_inputs
from edge_runtime.tools.bench_schema import Figure, figure, write_result

SCALE = 0.35  # chute pixels per data-set pixel (the simulator's default)
BATCHES = (1, 32, 256)


def rate(fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Items per wall second and per CPU second of `fn` (which returns how many items it handled)."""
    fn()
    n, w0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < seconds:
        n += fn()
    return n / (time.perf_counter() - w0), n / max(1e-9, time.process_time() - c0)


def bare(runner: ModelRunner, x: npt.NDArray[np.uint8]) -> Callable[[], int]:
    """onnxruntime alone: the verified session's run, without the runner's dict handling."""
    session, names = runner.session, [o.name for o in runner.manifest.outputs]
    return lambda: len(session.run(names, {"x": x})[0])


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--quick", action="store_true", help="shorter rounds")
    add_recording_option(ap)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    seconds, rounds = (0.15, 2) if args.quick else (1.0, 5)
    sim = ChuteSimulator(ChuteSimulatorConfig(seed=1, grains_per_s=1250, fps=25))
    frames = [Frame("chute.image", i, sim.next_frame()[0]) for i in range(40)]
    data: dict[str, object] = {"data": "synthetic (ChuteSimulator)"}
    if args.recording is not None:
        recorded, data = recorded_inputs(args.recording, "rice_sorter", 40)
        frames = [f for f in recorded if isinstance(f, Frame)] or frames
    runners = {v: load_model("rice_sorter", variant=v, intra_op_threads=1) for v in ("fp32", "int8")}
    tasks = {
        v: RiceSorterTask(
            RiceSorterConfig(kind="rice_sorter", declared_variety="Basmati", scale_px_per_dataset_px=SCALE), r
        )
        for v, r in runners.items()
    }
    params = tasks["fp32"].params
    per_frame = [segment(f.image, params).crops for f in frames]
    crops = np.concatenate(per_frame)
    grains_per_frame = len(crops) / len(frames)
    calls = [frames[i : i + 4] for i in range(0, len(frames), 4)]
    call_crops = [np.concatenate(per_frame[i : i + 4]) for i in range(0, len(frames), 4)]

    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for _ in range(rounds):
        for v, runner in runners.items():
            for b in BATCHES:
                x = np.ascontiguousarray(crops[:b])
                add(f"model.{v}.{b}", rate(lambda r=runner, x=x: len(r.run({"x": x})["probs"]), seconds)[0])  # type: ignore[misc]
                add(f"bare.{v}.{b}", rate(bare(runner, x), seconds)[0])
            k = [0]

            def e2e(task: RiceSorterTask = tasks[v], k: list[int] = k) -> int:
                k[0] += 1
                return sum(len(r.detail["grains"]) for r in task.process(calls[k[0] % len(calls)]))

            def bare_crops(runner: ModelRunner = runner, k: list[int] = k) -> int:
                k[0] += 1
                return bare(runner, call_crops[k[0] % len(calls)])()

            wall, cpu = rate(e2e, seconds * 2)
            add(f"e2e.{v}.wall", wall)
            add(f"e2e.{v}.cpu", cpu)
            wall, cpu = rate(bare_crops, seconds)
            add(f"e2e_bare.{v}.wall", wall)
            add(f"e2e_bare.{v}.cpu", cpu)

    figures: list[Figure] = []
    for v in runners:
        for b in BATCHES:
            figures.append(
                figure(
                    f"rice.model.{v}.batch{b}",
                    "crops/s",
                    samples[f"model.{v}.{b}"],
                    baseline=("bare onnxruntime", samples[f"bare.{v}.{b}"]),
                    params={"batch": b, "variant": v},
                )
            )
        for clock, unit, key in (("wall", "grains/s", "grains_per_s"), ("cpu", "grains/CPU-s", "grains_per_cpu_s")):
            figures.append(
                figure(
                    f"rice.e2e.{v}.{key}",
                    unit,
                    samples[f"e2e.{v}.{clock}"],
                    baseline=("bare onnxruntime, same crops", samples[f"e2e_bare.{v}.{clock}"]),
                    params={"variant": v, "grains_per_frame": round(grains_per_frame, 1)},
                )
            )
    write_result(
        args.json,
        "bench_rice",
        figures,
        details={
            "models": {v: r.ident for v, r in runners.items()},
            "frame": "640x480 ChuteSimulator, 4 frames per task call" if args.recording is None else "recorded",
            "inputs": data,
            "grains_per_frame": round(grains_per_frame, 1),
            "threads": "onnxruntime intra-op 1, OpenCV 1",
        },
    )


if __name__ == "__main__":
    main()
