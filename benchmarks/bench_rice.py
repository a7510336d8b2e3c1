"""Rice sorter speed: the model (fp32 and every shipped variant) at batch 1, 32 and 256 vs bare onnxruntime, and the
whole task end to end (frame -> segmentation -> crops -> model -> eject decisions) vs bare onnxruntime on the same
crops. Each shipped variant's task runs twice: as configured by default and with `work_scale: 2` (grains found
at half resolution, `rice.e2e.<variant>.work_scale2.*`), each against bare onnxruntime on its own crops.

Everything runs on one core (onnxruntime intra-op threads 1, OpenCV threads 1) in alternating rounds, so load from
other processes hits a figure and its baseline alike. Frames are dense chute frames of the real grain photographs
(`ChuteSimulator`, 640x480, about 48 grains per frame, 4 frames per task call). Rates are given per wall second and
per CPU second of this process: on a shared machine the CPU figure is the one that says what a core can do.

    .venv/bin/python benchmarks/bench_rice.py --json /tmp/bench_rice.json [--quick] [--recording FILE] [--compare DIR]

`--recording FILE` (a flight recording, `edge-runtime record`): the end-to-end figures use the line's own frames
(the first 40 of the recorded rice pipeline's streams) instead of the simulated chute.
`--compare DIR` times another model directory (e.g. the previous version, checked out to /tmp) in the same rounds,
each model on crops cut at its own manifest's crop size; its figures are named `rice.model.prev.<variant>...`.
"""

from __future__ import annotations

import argparse
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
from edge_runtime.tools.bench_timing import QUICK_ROUNDS_S, Rounds, rate

U8 = npt.NDArray[np.uint8]
SCALE = 0.35  # chute pixels per data-set pixel (the simulator's default)
BATCHES = (1, 32, 256)
QUICK_FRAMES = 8  # two task calls and about 390 crops, enough for batch 256 (rendering a frame: 1.4 s under emulation)


def bare(runner: ModelRunner, x: npt.NDArray[np.uint8]) -> Callable[[], int]:
    """onnxruntime alone: the verified session's run, without the runner's dict handling."""
    session, names = runner.session, [o.name for o in runner.manifest.outputs]
    return lambda: len(session.run(names, {"x": x})[0])


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke check: {QUICK_FRAMES} frames, 0.15 s or one call per figure, no warm-up, a second round only "
        f"when the first took under {QUICK_ROUNDS_S:.0f} s",
    )
    add_recording_option(ap)
    ap.add_argument("--compare", type=Path, help="another rice_sorter model directory, timed side by side")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    seconds, n_rounds = (0.15, 2) if args.quick else (1.0, 5)
    sim = ChuteSimulator(ChuteSimulatorConfig(seed=1, grains_per_s=1250, fps=25))
    frames = [Frame("chute.image", i, sim.next_frame()[0]) for i in range(QUICK_FRAMES if args.quick else 40)]
    data: dict[str, object] = {"data": "synthetic (ChuteSimulator)"}
    if args.recording is not None:
        recorded, data = recorded_inputs(args.recording, "rice_sorter", 40)
        frames = [f for f in recorded if isinstance(f, Frame)] or frames
    runners = {"fp32": load_model("rice_sorter", variant="fp32", intra_op_threads=1)}
    for v in runners["fp32"].manifest.variants:  # int8, and any other shipped variant
        runners[v] = load_model("rice_sorter", variant=v, intra_op_threads=1)
    if args.compare is not None:
        prev = load_model(args.compare, variant="fp32", intra_op_threads=1)
        runners["prev.fp32"] = prev
        for v in prev.manifest.variants:
            runners[f"prev.{v}"] = load_model(args.compare, variant=v, intra_op_threads=1)
    tasks = {
        v: RiceSorterTask(
            RiceSorterConfig(kind="rice_sorter", declared_variety="Basmati", scale_px_per_dataset_px=SCALE), r
        )
        for v, r in runners.items()
    }
    # the same models with the grains found at half resolution (`work_scale: 2`), under their own keys
    for v in list(tasks):
        if not v.startswith("prev."):
            tasks[f"{v}.work_scale2"] = RiceSorterTask(tasks[v].config.model_copy(update={"work_scale": 2}), runners[v])
    # each model gets the crops its manifest asks for (the crop size may differ between versions)
    per_frame = {v: [segment(f.image, t.params).crops for f in frames] for v, t in tasks.items()}
    crops = {v: np.concatenate(c) for v, c in per_frame.items()}
    grains_per_frame = len(crops["fp32"]) / len(frames)
    calls = [frames[i : i + 4] for i in range(0, len(frames), 4)]
    call_crops = {v: [np.concatenate(c[i : i + 4]) for i in range(0, len(frames), 4)] for v, c in per_frame.items()}

    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    def timed(fn: Callable[[], int], seconds: float = seconds) -> tuple[float, float]:
        return rate(fn, seconds, warm_up=not args.quick)

    rounds = Rounds(n_rounds, args.quick)
    for _ in rounds:
        for v, task in tasks.items():
            runner = task.runner
            for b in BATCHES if v in runners else ():
                x = np.ascontiguousarray(crops[v][:b])
                wall, cpu = timed(lambda r=runner, x=x: len(r.run({"x": x})["probs"]))  # type: ignore[misc]
                add(f"model.{v}.{b}", wall)
                add(f"model_cpu.{v}.{b}", cpu)
                wall, cpu = timed(bare(runner, x))
                add(f"bare.{v}.{b}", wall)
                add(f"bare_cpu.{v}.{b}", cpu)
            k = [0]

            def e2e(task: RiceSorterTask = task, k: list[int] = k) -> int:
                k[0] += 1
                return sum(len(r.detail["grains"]) for r in task.process(calls[k[0] % len(calls)]))

            def bare_crops(
                runner: ModelRunner = runner,
                k: list[int] = k,
                c: list[U8] = call_crops[v],
                step: int = task.config.crops_per_call,
            ) -> int:
                # in the model calls the task makes (`crops_per_call`), so the baseline is the fastest way to run
                # these crops, not one slower call of ~190
                k[0] += 1
                x = c[k[0] % len(calls)]
                return sum(bare(runner, x[a : a + step])() for a in range(0, len(x), step))

            wall, cpu = timed(e2e, seconds * 2)
            add(f"e2e.{v}.wall", wall)
            add(f"e2e.{v}.cpu", cpu)
            k[0] = 0  # the same task calls' crops (in quick mode the one call's)
            wall, cpu = timed(bare_crops)
            add(f"e2e_bare.{v}.wall", wall)
            add(f"e2e_bare.{v}.cpu", cpu)

    figures: list[Figure] = []
    for v in tasks:
        for b in BATCHES if v in runners else ():
            # per CPU second of this process too: what a core can do, whatever else the machine runs
            for clock, unit, suffix in (("", "crops/s", ""), ("_cpu", "crops/CPU-s", ".per_cpu_s")):
                figures.append(
                    figure(
                        f"rice.model.{v}.batch{b}{suffix}",
                        unit,
                        samples[f"model{clock}.{v}.{b}"],
                        baseline=("bare onnxruntime", samples[f"bare{clock}.{v}.{b}"]),
                        params={"batch": b, "variant": v, "model": runners[v].ident},
                    )
                )
        for clock, unit, key in (("wall", "grains/s", "grains_per_s"), ("cpu", "grains/CPU-s", "grains_per_cpu_s")):
            figures.append(
                figure(
                    f"rice.e2e.{v}.{key}",
                    unit,
                    samples[f"e2e.{v}.{clock}"],
                    baseline=("bare onnxruntime, same crops", samples[f"e2e_bare.{v}.{clock}"]),
                    params={
                        "variant": v.removesuffix(".work_scale2"),
                        "model": tasks[v].runner.ident,
                        "work_scale": tasks[v].params.work_scale,
                        "grains_per_frame": round(len(crops[v]) / len(frames), 1),
                    },
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
            "seconds_per_measurement": seconds,
            "rounds": rounds.done,
        },
    )


if __name__ == "__main__":
    main()
