"""Service start-up time and memory: `edge-runtime run` of the demo's deployment (every shipped pipeline: rice,
weld, vibration; the demo's simulated machines on loopback) against the bare interpreter.

The plant is the demo's (`edge_runtime.tools.demo.prepare_plant` / `running_plant`: mosquitto, the vibration
gateway, the PLC, the RS-485 drive when socat is there, the weld cell's OPC UA server, the chute and weld cameras'
folders), run in a thread of this process; the service is its own process, started as systemd would start it, with
`NOTIFY_SOCKET` pointing at a socket of this process. Figures per start:

- `service.startup.ready_s`: process start to `READY=1` (models verified and loaded, outbox open, every source,
  pipeline and sink started), against `python -c "import onnxruntime, cv2, numpy"` run to its end;
- `service.startup.healthz_s`: to `/healthz` answering 200; `service.startup.all_results_s`: to every pipeline
  having stored a result (the line running end to end; it depends on the cameras' frame rates, 2 fps for weld);
- `service.rss.peak_mb` (VmHWM) and `service.rss.steady_mb` (median VmRSS over the window once every pipeline
  runs), against a bare interpreter with those imports and the three models loaded through onnxruntime alone
  (one intra-op thread, one warm-up inference at batch 1 each), sampled over the same window.

Rounds alternate service and baselines. Start-up on a loaded machine stretches with the load; compare ratios.

    .venv/bin/python benchmarks/bench_service.py --json /tmp/bench_service.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adapters.loopback import free_port
from edge_runtime.inference import read_manifest, resolve_model_dir
from edge_runtime.tools.bench import edge_runtime_command, stop_process, wait_for_process
from edge_runtime.tools.bench_schema import figure, write_result
from edge_runtime.tools.broker import Mosquitto
from edge_runtime.tools.demo import DemoPlant, prepare_plant, running_plant

MODELS = ("rice_sorter", "weld_inspector", "vibration_anomaly")
IMPORTS = "import onnxruntime, cv2, numpy"
MODELS_ALONE = """
import sys
import numpy as np, cv2, onnxruntime as ort
sessions = []
for path in sys.argv[1:]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}
    session.run(None, {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], types[i.type])
                       for i in session.get_inputs()})
    sessions.append(session)
print("loaded", flush=True)
sys.stdin.read()
"""
PIPELINES = {"rice": "chute", "weld": "weldcam", "vibration": "gw1"}  # pipeline -> the device it needs


def status_mb(pid: int, key: str) -> float:
    """A /proc/PID/status memory line (VmRSS, VmHWM) in MB; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_window(pid: int, seconds: float, every_s: float = 0.25) -> tuple[float, float]:
    """(peak, steady) MB of a running process: VmHWM at the end, median VmRSS sampled over `seconds`."""
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(status_mb(pid, "VmRSS"))
        time.sleep(every_s)
    return status_mb(pid, "VmHWM"), statistics.median(samples)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


@contextmanager
def plant_in_thread(plant: DemoPlant) -> Iterator[None]:
    """The demo's simulated machines on their own event loop in a thread, for as long as the block runs."""
    started, failed = threading.Event(), []
    loop_box: list[asyncio.AbstractEventLoop] = []
    stop_box: list[asyncio.Event] = []

    async def serve() -> None:
        stop = asyncio.Event()
        loop_box.append(asyncio.get_running_loop())
        stop_box.append(stop)
        async with running_plant(plant):
            started.set()
            await stop.wait()

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)
            started.set()

    thread = threading.Thread(target=main, name="plant", daemon=True)
    thread.start()
    started.wait(120)
    if failed:
        raise RuntimeError(f"the simulated plant did not start: {failed[0]!r}")
    try:
        yield
    finally:
        if loop_box and stop_box:
            loop_box[0].call_soon_threadsafe(stop_box[0].set)
        thread.join(30)


def service_round(plant: DemoPlant, n: int, window_s: float, log: Path) -> dict[str, float]:
    """Start the service, time READY, /healthz and every pipeline's first result, sample its memory, stop it."""
    metrics = free_port()
    config = plant.deployment_file(
        {
            "metrics_listen": f"127.0.0.1:{metrics}",
            "outbox": {"path": str(plant.base_dir / f"outbox-{n}.sqlite")},
        }
    )
    pipelines = [p for p, device in PIPELINES.items() if device not in plant.leave_out]
    notify_path = plant.base_dir / f"notify-{n}.sock"
    env = {
        **os.environ,
        **plant.env,
        "DEMO_SCADA_PORT": str(free_port()),
        "DEMO_UI_PORT": str(free_port()),
        "NOTIFY_SOCKET": str(notify_path),
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, log.open("ab") as out:
        notify.bind(str(notify_path))
        notify.settimeout(0.1)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*edge_runtime_command(), "run", str(config)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            ready: list[float] = []

            def got_ready() -> bool:
                try:
                    if b"READY=1" in notify.recv(4096):
                        ready.append(time.perf_counter() - t0)
                except TimeoutError:
                    pass
                return bool(ready)

            wait_for_process("READY=1", got_ready, 180, proc)
            wait_for_process("/healthz 200", lambda: _get(f"http://127.0.0.1:{metrics}/healthz")[0] == 200, 60, proc)
            healthz = time.perf_counter() - t0

            def every_pipeline_stored() -> bool:
                text = _get(f"http://127.0.0.1:{metrics}/metrics")[1]
                done = set(re.findall(r'_pipeline_batches_total\{pipeline="(\w+)"\} ([1-9][\d.e+]*)', text))
                return {p for p, _ in done} >= set(pipelines)

            wait_for_process("a result from every pipeline", every_pipeline_stored, 120, proc)
            all_results = time.perf_counter() - t0
            peak, steady = rss_window(proc.pid, window_s)
        finally:
            stop_process(proc, 60)
        notify_path.unlink(missing_ok=True)
    return {"ready_s": ready[0], "healthz_s": healthz, "all_results_s": all_results, "peak_mb": peak,
            "steady_mb": steady}  # fmt: skip


def imports_round() -> float:
    """Seconds from process start to `python -c "import onnxruntime, cv2, numpy"` having imported (a line printed
    after the imports; the interpreter's exit is not counted, as the service's READY counts none)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", IMPORTS + "; print('imported', flush=True)"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - t0
    if proc.wait(30) != 0 or line.strip() != b"imported":
        raise RuntimeError(f"{IMPORTS!r} failed (exit code {proc.returncode})")
    return took


def models_alone_round(window_s: float) -> dict[str, float]:
    """The three models loaded through onnxruntime alone: seconds to loaded, peak and steady MB. The files are each
    manifest's default variant, the ones the demo deployment's pipelines load (they name no variant)."""
    paths = [str(resolve_model_dir(m) / read_manifest(resolve_model_dir(m)).file_of(None)[0]) for m in MODELS]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MODELS_ALONE, *paths], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != b"loaded":
            raise RuntimeError(f"the models-alone baseline failed (exit code {proc.wait(30)})")
        loaded = time.perf_counter() - t0
        peak, steady = rss_window(proc.pid, window_s)
    finally:
        proc.stdin.close()
        proc.wait(30)
    return {"loaded_s": loaded, "peak_mb": peak, "steady_mb": steady}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--rounds", type=int, default=3, help="service starts (each with its baselines)")
    ap.add_argument("--window-s", type=float, default=15.0, help="memory sampled this long once the line runs")
    ap.add_argument("--quick", action="store_true", help="one start, a short window (CI smoke)")
    args = ap.parse_args()
    rounds, window_s = (1, 3.0) if args.quick else (args.rounds, args.window_s)
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # the simulated weld cell runs without security

    service: list[dict[str, float]] = []
    imports: list[float] = []
    alone: list[dict[str, float]] = []
    with Mosquitto() as broker, tempfile.TemporaryDirectory(prefix="edge-runtime-bench-service-") as tmp:
        t0 = time.perf_counter()
        plant = prepare_plant(Path(tmp), broker.port, chute_frames=20, ui_port=free_port())
        prepare_s = time.perf_counter() - t0
        log = Path(tmp) / "service.log"
        try:
            with plant_in_thread(plant):
                for n in range(rounds):
                    imports.append(imports_round())
                    service.append(service_round(plant, n, window_s, log))
                    alone.append(models_alone_round(window_s))
                    imports.append(imports_round())
        except Exception:
            print(log.read_text(errors="replace")[-3000:] if log.exists() else "(no service log)", file=sys.stderr)
            raise
        finally:
            plant.close()
        left_out = sorted(plant.leave_out)
    bare = f'python -c "{IMPORTS}"'
    figures = [
        figure(
            "service.startup.ready_s", "s", [r["ready_s"] for r in service], baseline=(bare, imports),
            higher_is_better=False,
        ),
        figure(
            "service.startup.healthz_s", "s", [r["healthz_s"] for r in service], baseline=(bare, imports),
            higher_is_better=False,
        ),
        # no baseline: it waits for the simulated cameras' and gateways' first frames (the weld camera runs at 2 fps)
        figure("service.startup.all_results_s", "s", [r["all_results_s"] for r in service], higher_is_better=False),
        figure(
            "service.rss.peak_mb", "MB", [r["peak_mb"] for r in service],
            baseline=("imports + 3 models in onnxruntime alone", [a["peak_mb"] for a in alone]),
            higher_is_better=False,
        ),
        figure(
            "service.rss.steady_mb", "MB", [r["steady_mb"] for r in service],
            baseline=("imports + 3 models in onnxruntime alone", [a["steady_mb"] for a in alone]),
            higher_is_better=False,
        ),
    ]  # fmt: skip
    write_result(
        args.json,
        "bench_service",
        figures,
        details={
            "deployment": "edge_runtime/data/demo.yaml (+ metrics_listen), simulated machines in the bench process",
            "left_out": left_out,
            "models_alone_loaded_s": [round(a["loaded_s"], 3) for a in alone],
            "memory_window_s": window_s,
            "plant_prepare_s": round(prepare_s, 1),
        },
    )


if __name__ == "__main__":
    main()
