"""Rice line: frame-to-decision latency at half the maximal feed rate, through the real service.

1. Maximal feed rate: frames/s (and grains/s) the rice task sustains on one core (segmentation + one batched
   inference per frame, OpenCV and onnxruntime on one thread), on frames of the simulated chute at a realistic
   density (real grain photographs, 640x480, 1,250 grains/s at 25 fps: about 48 grains per frame), in alternating
   rounds with its baseline: onnxruntime alone on the same frames' crops.
2. The service then runs a camera at half that rate into the rice pipeline, with the ejector coils written to a
   simulated PLC on Modbus TCP. The camera replays 120 (quick: 8) pre-rendered chute frames from a folder (JPEG
   decoding stands in for a real camera's; rendering the chute live costs more than the sorter itself). Latency is
   capture time (the camera's `t_ns`) to the stored result (`capture_to_decision`), and for the frames with an
   ejection, capture to the PLC's acknowledgement of the ejector coils (`capture_to_eject`: the stored result
   taken from the outbox by the Modbus sink and written), p50/p99, plus the coil write latency alone. Their
   baseline is the task's own time on one frame (part 1's calls): the ratio is what the service adds. The rate the
   line kept is given against the camera's.

    python benchmarks/bench_rice_line.py [--quick] [--json PATH] [--variant fp32|fast|int8|pair_int8]
        [--work-scale 2] [--recording FILE]

Without `--variant` the line runs the manifest's default variant (`pair_int8` since 1.3.1), as a deployment that
names none does; the figures name the variant either way.

`--work-scale 2` runs the task's `work_scale: 2` (grains found at half resolution); its figures are named
`rice_line.<variant>.work_scale2.*`.

`--recording FILE` (a flight recording): both parts use the line's own frames (those of the recorded rice
pipeline's streams; the camera replays them from PNG files, lossless) instead of the simulated chute.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import Frame, Result
from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig
from adapters.loopback import free_port
from adapters.modbus.config import ModbusTcpConfig
from adapters.modbus.simulator import SimulatedMachine
from edge_runtime.config import Deployment
from edge_runtime.inference import load_model, read_manifest
from edge_runtime.paths import models_dir
from edge_runtime.service import Service
from edge_runtime.tasks.rice_segment import segment
from edge_runtime.tasks.rice_sorter import RiceSorterConfig, RiceSorterTask
from edge_runtime.tools.bench_recording import add_recording_option, recorded_inputs
from edge_runtime.tools.bench_schema import figure, histogram, write_result

SCALE = 0.35  # chute pixels per data-set pixel (the simulator's default grain scale)
DENSITY = {"grains_per_s": 1250.0, "fps": 25.0}  # about 48 grains per 640x480 frame
MIN_DECIDED = 3  # frames decided at half load, at least: the measuring time stretches until then
QUICK_FRAMES = 8  # frames rendered in quick mode (the camera loops over them): 1.4 s each under emulation


def chute_task(variant: str, work_scale: int = 1) -> RiceSorterTask:
    """The rice task on one core (OpenCV and onnxruntime on one thread), warmed up by `load_model`."""
    import cv2

    cv2.setNumThreads(1)
    return RiceSorterTask(
        RiceSorterConfig(
            kind="rice_sorter",
            declared_variety="Basmati",
            scale_px_per_dataset_px=SCALE,
            work_scale=work_scale,  # the config refuses anything but 1 or 2
        ),
        load_model("rice_sorter", variant=variant, intra_op_threads=1),
    )


def per_frame_rate(
    handle: Callable[[int], int], seconds: float, calls_ms: list[float] | None = None
) -> tuple[float, float]:
    """Frames and grains per second of `handle(n)` (the n-th frame's work; it returns the frame's grains), over at
    least one frame; each frame's time in ms is appended to `calls_ms` when given."""
    n, grains, t0 = 0, 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        grains += handle(n)
        if calls_ms is not None:
            calls_ms.append((time.perf_counter() - t) * 1e3)
        n += 1
    elapsed = time.perf_counter() - t0
    return n / elapsed, grains / elapsed


def max_feed_rate(
    task: RiceSorterTask, frames: list[Frame], seconds: float, calls_ms: list[float] | None = None
) -> tuple[float, float]:
    """Frames and grains per second, one frame per task call; each call's time goes to `calls_ms` (the latency
    figures' baseline: the task alone, no service)."""
    return per_frame_rate(lambda n: len(task.process([frames[n % len(frames)]])[0].detail["grains"]), seconds, calls_ms)


def bare_feed_rate(task: RiceSorterTask, crops: list[npt.NDArray[np.uint8]], seconds: float) -> tuple[float, float]:
    """The max feed's baseline: onnxruntime alone on each frame's crops (cut beforehand by the same segmentation), in
    the task's calls of `crops_per_call`; frames and grains per second."""
    session, step = task.runner.session, task.config.crops_per_call
    names = [o.name for o in task.runner.manifest.outputs]

    def frame(n: int) -> int:
        x = crops[n % len(crops)]
        for a in range(0, len(x), step):
            session.run(names, {task.input_name: x[a : a + step]})
        return len(x)

    return per_frame_rate(frame, seconds)


def deployment(fps: float, plc_port: int, outbox: Path, variant: str, frames: Path, work_scale: int = 1) -> Deployment:
    return Deployment.model_validate(
        {
            "service": {"metrics_listen": None, "outbox": {"path": str(outbox)}},
            "devices": [{"id": "chute", "kind": "camera", "source": str(frames), "fps": fps, "loop": True}],
            "pipelines": [
                {
                    "id": "rice",
                    "inputs": ["chute.*"],
                    "task": {
                        "kind": "rice_sorter",
                        "declared_variety": "Basmati",
                        "ejector_channels": 16,
                        "scale_px_per_dataset_px": SCALE,
                        "work_scale": work_scale,
                    },
                    "model": {"name": "rice_sorter", "variant": variant},
                    "batching": {"max_batch": 4, "max_wait_ms": 0, "queue_size": 8},
                    "outputs": ["ejectors"],
                }
            ],
            "sinks": [
                {
                    "id": "ejectors",
                    "kind": "modbus-write",
                    "connection": {"transport": "tcp", "port": plc_port},
                    "writable": [{"table": "coil", "start": 100, "end": 115}],
                    "actions": [
                        {
                            "field": "eject_channels",
                            "table": "coil",
                            "address": 100,
                            "mode": "pulse_per_channel",
                            "channels": 16,
                            "pulse_ms": 20,
                        }
                    ],
                }
            ],
        }
    )


async def decided(latencies: list[float], n: int, service: asyncio.Task[None], timeout_s: float = 600.0) -> None:
    """Until `n` frames are decided. On a gateway the measuring time holds hundreds; under emulation (`make
    image-arm64`) half load is one frame per 13 s, so a fixed window could hold none. The deadline ends a hang."""
    deadline = time.monotonic() + timeout_s
    while len(latencies) < n:
        if service.done():
            service.result()  # its exception, if any
            raise RuntimeError("the service stopped before deciding enough frames")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(latencies)} of {n} frames decided within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def line_latency(
    fps: float,
    seconds: float,
    variant: str,
    n_frames: int = 120,
    recorded: list[Frame] | None = None,
    work_scale: int = 1,
) -> dict[str, Any]:
    port = free_port()
    plc_cfg = ModbusTcpConfig.model_validate(
        {
            "kind": "modbus-tcp",
            "id": "plc",
            "port": port,
            "tags": [{"name": f"eject{i}", "table": "coil", "address": 100 + i, "dtype": "bool"} for i in range(16)],
        }
    )
    plc = SimulatedMachine(plc_cfg, vary=False)
    await plc.start(port)
    latencies: list[float] = []
    decisions = {"eject": 0, "keep": 0}

    def observe(result: Result) -> None:
        latencies.append((time.time_ns() - result.t_ns) / 1e6)
        if result.decision in decisions:
            decisions[str(result.decision)] += 1

    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames"
        if recorded:
            import cv2

            frames.mkdir()
            for i, frame in enumerate(recorded[:n_frames]):
                cv2.imwrite(str(frames / f"{i:05d}.png"), frame.image)
        else:
            ChuteSimulator(ChuteSimulatorConfig(seed=2, **DENSITY)).write_frames(frames, n_frames, suffix=".jpg")
            (frames / "truth.csv").unlink()
        service = Service(deployment(fps, port, Path(tmp) / "o.sqlite", variant, frames, work_scale))
        service.result_observers.append(observe)
        service.load()  # builds the sinks, so the ejector's deliveries can be timed
        ejected = _time_ejections(service.sinks["ejectors"])
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        await service.started.wait()
        await asyncio.sleep(2.0)  # warm-up: first frames, first connection
        await decided(latencies, 1, runner)
        latencies.clear()
        ejected.clear()
        decisions.update(eject=0, keep=0)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        await decided(latencies, MIN_DECIDED, runner)
        elapsed = time.monotonic() - t0
        sink = service.sinks["ejectors"]
        write = sink.latency_ms() if hasattr(sink, "latency_ms") else {}
        sink_stats = dict(sink.stats)
        dropped = service.pipelines[0].stats["input_dropped"]
        stop.set()
        await runner
    await plc.stop()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "fps_requested": round(fps, 2),
        "frames_decided": len(latencies),
        "frames_per_s": round(len(latencies) / elapsed, 2),
        "seconds": round(elapsed, 1),
        "decisions": decisions,
        "frames_dropped": int(dropped),
        "capture_to_decision_ms_p50": round(float(np.percentile(lat, 50)), 2),
        "capture_to_decision_ms_p99": round(float(np.percentile(lat, 99)), 2),
        "frames_ejected_and_written": len(ejected),
        "coil_write_ms": write,
        "ejector_sink": sink_stats,
        "latencies_ms": latencies,
        "eject_latencies_ms": ejected,
    }


def _time_ejections(sink: Any) -> list[float]:
    """Capture to the PLC's acknowledgement of the ejector coils, per frame with an ejection: the sink's `deliver`
    returns once the coils' write is acknowledged (the pulse's end is written later, in the background)."""
    times: list[float] = []
    deliver = sink.deliver

    async def timed(result: Result) -> None:
        await deliver(result)
        if result.detail.get("eject_channels"):
            times.append((time.time_ns() - result.t_ns) / 1e6)

    sink.deliver = timed
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--variant", help="a variant of the manifest (fp32, fast, int8, pair_int8); default: the manifest's default, "
        "what a deployment without `variant` runs"
    )  # fmt: skip
    parser.add_argument("--work-scale", type=int, default=1, choices=[1, 2], help="the task's work_scale")
    add_recording_option(parser)
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 20.0
    n_frames = QUICK_FRAMES if args.quick else 120
    recorded: list[Frame] = []
    inputs: dict[str, Any] = {"data": "synthetic (ChuteSimulator)"}
    if args.recording is not None:
        found, inputs = recorded_inputs(args.recording, "rice_sorter", n_frames)
        recorded = [f for f in found if isinstance(f, Frame)]
    if recorded:
        frames = recorded
    else:
        sim = ChuteSimulator(ChuteSimulatorConfig(seed=1, **DENSITY))
        frames = [Frame("chute.image", 0, sim.next_frame()[0]) for _ in range(min(n_frames, 40))]
    variant = read_manifest(models_dir() / "rice_sorter").variant_or_default(args.variant)
    task = chute_task(variant, args.work_scale)
    task.process(frames[:1])  # warm-up at the frame's size
    crops = [segment(f.image, task.params).crops for f in frames]
    # alternating rounds, so load from elsewhere hits the task and its baseline alike
    rates: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    calls_ms: list[float] = []
    for _ in range(2 if args.quick else 3):
        rates.append(max_feed_rate(task, frames, 1.0 if args.quick else 5.0, calls_ms))
        bare.append(bare_feed_rate(task, crops, 1.0 if args.quick else 5.0))
    max_fps = statistics.median(r[0] for r in rates)
    half = asyncio.run(line_latency(max_fps / 2, seconds, variant, n_frames, recorded, args.work_scale))
    lat = half.pop("latencies_ms") or [float("nan")]
    eject = half.pop("eject_latencies_ms") or [float("nan")]
    v = variant + (".work_scale2" if args.work_scale == 2 else "")
    onnx = "bare onnxruntime on the same crops, one frame's per call"
    figures = [
        figure(
            f"rice_line.{v}.max_feed.{key}",
            unit,
            [r[i] for r in rates],
            baseline=(onnx, [b[i] for b in bare]),
        )
        for i, (key, unit) in enumerate((("frames_per_s", "frames/s"), ("grains_per_s", "grains/s")))
    ]
    # its ratio says whether the line kept up with the camera
    figures.append(
        figure(
            f"rice_line.{v}.half_load.frames_per_s",
            "frames/s",
            [half["frames_per_s"]],
            baseline=("the camera's rate", [half["fps_requested"]]),
        )
    )
    latencies = {"capture_to_decision": lat, "capture_to_eject": eject}
    figures += [
        figure(
            f"rice_line.{v}.half_load.{name}_p{q}",
            "ms",
            [float(np.percentile(ms, q))],
            baseline=("the task alone on one frame, no service", [float(np.percentile(calls_ms, q))]),
            higher_is_better=False,
        )
        for name, ms in latencies.items()
        for q in (50, 99)
    ]
    write_result(
        args.json,
        "bench_rice_line",
        figures,
        histograms=[histogram(f"rice_line.{v}.{name}", "ms", ms) for name, ms in latencies.items()],
        details={
            "half_rate": half,
            "frame": "recorded" if recorded else "640x480 chute, about 48 grains per frame",
            "inputs": inputs,
        },
    )


if __name__ == "__main__":
    main()
