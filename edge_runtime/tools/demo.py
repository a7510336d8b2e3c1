"""`edge-runtime demo`: the embedded default deployment, on loopback, with simulated machines of four vintages.

It starts its own mosquitto as a child on a free port, a vibration gateway replaying real CWRU bearing recordings
over MQTT (one per fault class, 12 kHz and 48 kHz), a packing PLC on Modbus TCP (which also receives the rice
ejector coils), a weld cell's OPC UA server, a rice chute camera composed from real grain photographs and a weld
camera showing real weld photographs; then the service from `data/demo.yaml` with all three models. Results go
through the real outbox to MQTT, an OPC UA results server and the PLC's coils; the terminal shows a live board
and a summary at the end. Parts whose data set is absent (an installed copy without ../shared) are left out,
and the demo says so; the vibration line then replays the bundled excerpt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from adapters.base import Frame, Reading, Result, Sample
from adapters.loopback import free_port
from adapters.supervise import cancel_and_wait
from edge_runtime.paths import models_dir, shared_dataset
from edge_runtime.tools.broker import Mosquitto, MosquittoError, find_mosquitto

if TYPE_CHECKING:
    from edge_runtime.service import Service

__all__ = ["DemoPlant", "RunningPlant", "prepare_plant", "run_demo", "running_plant"]

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "data" / "demo.yaml"

# One recording per class; the mix of 12 kHz and 48 kHz exercises resampling on the live path. The three fault
# recordings are in the model's validation split (never trained on); the healthy one is the data set's only
# healthy recording, of which the model saw the first 75 %.
DEMO_RECORDINGS = {
    "pump1": ("recordings/normal_0_97_head.npz", "normal"),
    "fan2": ("recordings/12k_drive_end_b014_0_185.npz", "ball"),
    "motor3": ("recordings/48k_drive_end_ir021_0_213.npz", "inner_race"),
    "gearbox4": ("recordings/12k_drive_end_or021@3_2_248.npz", "outer_race"),
}


@dataclass
class Board:
    """What the live board and the summary show, fed by the service's observers (on the event loop)."""

    truth: dict[str, str]
    task_of: dict[str, str] = field(default_factory=dict)  # pipeline id -> task kind, from the deployment
    vib_windows: collections.Counter[str] = field(default_factory=collections.Counter)
    vib_correct: collections.Counter[str] = field(default_factory=collections.Counter)
    vib_last: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    rice_frames: int = 0
    rice_grains: int = 0
    rice_ejected: int = 0
    rice_should: int = 0  # off-type or broken grains in the truth
    rice_caught: int = 0  # of those, ejected
    rice_good: int = 0
    rice_false: int = 0  # good grains ejected
    weld_frames: int = 0
    weld_rejects: int = 0
    weld_agree: int = 0
    weld_labelled: int = 0
    weld_truth: dict[int, str] = field(default_factory=dict)  # frame t_ns -> decision from the label file
    weld_labels: Path | None = None
    weld_images: Path | None = None  # the weld camera's folder of links
    weld_last: str = "-"
    hall_c: float | None = None  # the cold snap's hall temperature, as the weld cell reports it
    lens: float | None = None  # latest estimated lens transmission of the chute camera
    lens_min: float = 1.0
    heater: bool = False
    heater_on_at_c: float | None = None  # hall temperature when the lens heater first switched on
    t85: float | None = None
    preheat: bool = False
    preheat_at_c: float | None = None  # hall temperature when the weld cell first called for preheat
    readings: dict[str, str] = field(default_factory=dict)
    chute_truth: dict[int, str] = field(default_factory=dict)
    chute_frames: dict[str, str] = field(default_factory=dict)  # rendered chute frame file -> its truth (json)

    def on_samples(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            self.on_sample(sample)

    def on_sample(self, sample: Sample) -> None:
        if isinstance(sample, Frame):
            truth = self.chute_frames.get(str(sample.meta.get("source", "")))
            if truth is not None:
                self.chute_truth[sample.t_ns] = truth
                if len(self.chute_truth) > 500:
                    self.chute_truth.pop(next(iter(self.chute_truth)))
            elif self.weld_labels is not None and "source" in sample.meta:
                # the camera's folder holds numbered links to the data set's photographs, named like their labels
                photo = Path(str(sample.meta["source"]))
                if self.weld_images is not None:
                    photo = (self.weld_images / photo.name).resolve()
                rejects = _weld_rejects(self.weld_labels / f"{photo.stem}.txt")
                if rejects is not None:
                    self.weld_truth[sample.t_ns] = "reject" if rejects else "accept"
        elif isinstance(sample, Reading) and sample.value.ndim == 0:
            if sample.stream.endswith(".hall_temp"):
                self.hall_c = float(sample.value)
            value = sample.value.item()
            text = f"{value:.1f}" if isinstance(value, float) else str(value)
            self.readings[sample.stream] = f"{text}{sample.unit}" if sample.quality == "good" else sample.quality

    def on_result(self, result: Result) -> None:
        r = result.to_json()
        task = self.task_of.get(result.pipeline)
        self.latency_ms[result.pipeline].append(r["latency_ns"] / 1e6)
        if task == "vibration_anomaly":
            parts = str(r.get("stream", "")).split(".")
            stream = parts[1] if len(parts) > 1 else str(r.get("stream"))
            self.vib_windows[stream] += 1
            self.vib_correct[stream] += int(r.get("label") == self.truth.get(stream))
            self.vib_last[stream] = r
        elif task == "rice_sorter":
            self._score_rice(r)
            if isinstance(r.get("lens_transmission"), float):
                self.lens = float(r["lens_transmission"])
                self.lens_min = min(self.lens_min, self.lens)
                self.heater = bool(r.get("lens_heater"))
                if self.heater and self.heater_on_at_c is None:
                    self.heater_on_at_c = self.hall_c
        elif task == "weld_inspector":
            self.weld_frames += 1
            self.weld_rejects += int(r.get("decision") == "reject")
            expected = self.weld_truth.pop(result.t_ns, None)
            if expected is not None:
                self.weld_labelled += 1
                self.weld_agree += int(expected == r.get("decision"))
            boxes = r.get("boxes") or []
            labels = ",".join(sorted({str(b.get("label")) for b in boxes})) or "no weld found"
            self.weld_last = f"{r.get('decision')} ({labels})"
            if isinstance(r.get("t85_s"), float):
                self.t85 = float(r["t85_s"])
                self.preheat = bool(r.get("preheat_required"))
                if self.preheat and self.preheat_at_c is None:
                    self.preheat_at_c = self.hall_c

    def _score_rice(self, r: dict[str, Any]) -> None:
        self.rice_frames += 1
        grains = r.get("grains") or []
        self.rice_grains += len(grains)
        self.rice_ejected += sum(bool(g["eject"]) for g in grains)
        truth = self.chute_truth.pop(r["t_ns"], None)
        if truth is None:
            return
        for x, y, w, h, _variety, broken, off_type in json.loads(truth):
            hit = [g for g in grains if x <= g["x"] + g["w"] / 2 <= x + w and y <= g["y"] + g["h"] / 2 <= y + h]
            ejected = any(g["eject"] for g in hit)
            if broken or off_type:
                self.rice_should += 1
                self.rice_caught += int(ejected)
            else:
                self.rice_good += 1
                self.rice_false += int(ejected)

    def print_board(self, elapsed: float, service: Any) -> None:
        print(f"\n-- {elapsed:5.1f} s " + "-" * 90)
        for stream, r in self.vib_last.items():
            p = r["scores"][r["label"]]
            flag = "" if r["label"] == self.truth.get(stream) else "   <- truth " + self.truth.get(stream, "?")
            print(
                f"vibration {stream:<9} {r['label']:<11} p={p:4.2f} anomaly={r['anomaly_score']:4.2f} "
                f"{r['decision']:<5} {r['latency_ns'] / 1e6:5.1f} ms  seq {r['seq']}{flag}"
            )
        if self.rice_frames:
            print(
                f"rice      chute     {self.rice_frames} frames, {self.rice_grains} grains, "
                f"{self.rice_ejected} ejected; off-type/broken caught {self.rice_caught}/{self.rice_should}, "
                f"good grains ejected {self.rice_false}/{self.rice_good}"
            )
        if self.weld_frames:
            print(
                f"weld      seam cam  {self.weld_frames} frames, {self.weld_rejects} rejected; last: {self.weld_last}"
            )
        if self.hall_c is not None:
            lens = "-" if self.lens is None else f"{self.lens:.2f}"
            t85 = "-" if self.t85 is None else f"{self.t85:.1f} s"
            print(
                f"cold snap hall {self.hall_c:+5.1f} degC; chute lens transmission {lens}, heater "
                f"{'ON' if self.heater else 'off'}; weld t8/5 {t85}{'  PREHEAT REQUIRED' if self.preheat else ''}"
            )
        shown = [f"{k.split('.', 1)[1]}={v}" for k, v in sorted(self.readings.items()) if _SHOW.search(k)]
        if shown:
            print("machines  " + "  ".join(shown))
        pending = service.outbox.pending_rows
        print(f"outbox    {pending} results waiting" + ("" if pending < 50 else "  (a sink is behind or down)"))


_SHOW = re.compile(
    r"plc1\.(line_speed|oil_temp|parts_count)$|weld1\.(current|voltage|wire_feed)$|drive1\.(speed|heatsink_temp)$"
)


def _weld_rejects(label: Path) -> bool | None:
    """The label file's frame decision: reject on a bad weld or a defect (YOLO classes 0 and 2), None unlabelled."""
    try:
        classes = {line.split()[0] for line in label.read_text().splitlines() if line.strip()}
    except OSError:
        return None
    return bool(classes & {"0", "2"})


def _weld_images(target: Path, n: int = 60) -> int:
    """Link `n` real weld photographs (the model's validation sources where known) into `target`, in the order the
    camera shows them: good and bad welds alternate, as on a line, and each kind cycles through its sources, so a
    short demo shows both decisions on several sources instead of one video's frames. The order comes from the
    labels, never from the model's answers; the board scores every decision against those labels."""
    data = shared_dataset("weld_photos")
    if data is None:
        return 0
    images = sorted((data / "images").glob("*.jpg"))
    source_of = {p.name: p.stem for p in images}
    split = models_dir() / "weld_inspector" / "split.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        val_sources = set(json.loads(split.read_text())["val_sources"])
        with (data / "sources.csv").open(newline="") as fh:
            source_of.update({row["image"]: row["source"] for row in csv.DictReader(fh)})
        images = [p for p in images if source_of[p.name] in val_sources] or images
    kinds: dict[bool | None, dict[str, list[Path]]] = {True: {}, False: {}, None: {}}
    for path in images:
        kinds[_weld_rejects(data / "labels" / f"{path.stem}.txt")].setdefault(source_of[path.name], []).append(path)
    # round robin: first image of every source, then the second of every source, ...
    queues = [[p for group in zip_longest(*kind.values()) for p in group if p is not None] for kind in kinds.values()]
    order = [p for group in zip_longest(queues[0], queues[1]) for p in group if p is not None] + queues[2]
    target.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(order[:n]):  # the camera shows a folder in name order
        (target / f"{i:03d}-{path.name}").symlink_to(path)
    return min(len(order), n)


COLD_START_C, COLD_END_C = 5.0, -30.0  # the demo's cold snap: the hall's temperature over the run


def hall_temperature(fraction: float) -> float:
    """The cold snap's hall temperature `fraction` (0..1) of the way through the demo."""
    return COLD_START_C + (COLD_END_C - COLD_START_C) * min(max(fraction, 0.0), 1.0)


def cold_view(image: npt.NDArray[np.uint8], ambient_c: float, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """The chute as a cold camera sees it (docs/cold.md): LED red up to +30 % and a condensation veil whose
    transmission falls to ~0.55 at -30 degC, varying across the window, with a slight droplet blur."""
    import cv2

    s = float(np.clip((20.0 - ambient_c) / 50.0, 0.0, 1.0))
    img = image.astype(np.float32) * np.array([1.0 + 0.03 * s, 1.0 + 0.05 * s, 1.0 + 0.30 * s], np.float32)
    h, w = img.shape[:2]
    t_lo = 1.0 - 0.45 * s * float(rng.uniform(0.9, 1.0))
    across = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    down = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    t = (t_lo + (1.0 - t_lo) * (0.6 * across + 0.4 * down))[..., None]
    out = np.asarray(img * t + 0.85 * 255.0 * (1.0 - t), dtype=np.float32)
    if s > 0.2:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), 1.2 * s), dtype=np.float32)
    return np.asarray(np.clip(out + 0.5, 0, 255), dtype=np.uint8)


def _chute_frames(target: Path, n: int, calibration: Path) -> dict[str, str]:
    """Render the simulated rice chute (real grain photographs on a plate) for the chute camera to play: first
    commissioning frames at normal temperature, fitted into the optics calibration (`calibrate optics`), then the
    run's frames as the cold snap degrades them. Returns each frame file's truth, so the board scores the ejectors."""
    import cv2

    from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig, truth_json
    from edge_runtime.tools.calibrate import calibrate_optics

    data = shared_dataset("rice_grains")
    if data is None:
        return {}
    sim = ChuteSimulator(ChuteSimulatorConfig(data_dir=str(data), fps=10.0))
    commissioning = target.parent / "commissioning"
    sim.write_frames(commissioning, 16, suffix=".png")
    calibrate_optics(commissioning, calibration, reference_c=COLD_START_C + 15.0)
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    truths: dict[str, str] = {}
    for i in range(n):
        image, truth = sim.next_frame()
        name = f"frame_{i:06d}.jpg"
        cv2.imwrite(str(target / name), cold_view(image, hall_temperature(i / max(n - 1, 1)), rng))
        truths[name] = truth_json(truth)
    return truths


def _ui_port(preferred: int = 8080) -> int:
    """The operator page's port: 8080 when it is free (an address a newcomer can remember), else any free one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


@dataclass
class DemoPlant:
    """The demo's simulated plant, prepared in a folder: the `${DEMO_*}` values that fill the embedded deployment,
    the parts left out for want of data, and what the simulators play. `edge-runtime demo` runs it beside the
    service in one process; `benchmarks/bench_service.py` runs the service as its own `edge-runtime run`."""

    base_dir: Path
    mqtt_port: int
    env: dict[str, str]
    leave_out: set[str]
    recordings: dict[str, Any]
    truth: dict[str, str]
    origin: str
    rendered: dict[str, str]  # rendered chute frame file -> its truth (json)
    n_weld: int
    serial: subprocess.Popen[bytes] | None = None

    @property
    def with_drive(self) -> bool:
        return "drive1" not in self.leave_out

    def deployment_file(self, service: dict[str, Any] | None = None) -> Path:
        """The embedded deployment without the parts whose data is absent, with `service` options overridden
        (a left-out pipeline's calibration file does not exist, so it goes before validation, not after)."""
        if not self.leave_out and not service:
            return DEMO_CONFIG
        import yaml

        data = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
        for section in ("devices", "pipelines"):
            data[section] = [item for item in data.get(section, []) if item.get("id") not in self.leave_out]
        data["service"] = {**data.get("service", {}), **(service or {})}
        out = self.base_dir / DEMO_CONFIG.name
        out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return out

    def close(self) -> None:
        if self.serial is not None:
            self.serial.terminate()
            self.serial.wait(10)
            self.serial = None


def prepare_plant(
    base_dir: Path, mqtt_port: int, *, chute_frames: int, data_dir: Path | None = None, ui_port: int | None = None
) -> DemoPlant:
    """Render the chute frames (and fit their optics calibration), link the weld photographs, open the virtual
    RS-485 line and pick free ports, printing a note for each part left out. Raises OSError or ValueError when the
    vibration recordings cannot be read."""
    recordings, truth, origin = _recordings(data_dir)
    env = {k: str(free_port()) for k in ("DEMO_PLC_PORT", "DEMO_WELD_OPCUA_PORT", "DEMO_SCADA_PORT")}
    env["DEMO_UI_PORT"] = str(ui_port or _ui_port())
    weld_dir = base_dir / "weld_images"
    n_weld = _weld_images(weld_dir)
    chute_dir = base_dir / "chute_frames"
    rendered = _chute_frames(chute_dir, chute_frames, base_dir / "optics.yaml")
    serial = _serial_line(base_dir)
    env.update(
        DEMO_MQTT_PORT=str(mqtt_port),
        DEMO_DIR=str(base_dir),
        DEMO_WELD_IMAGES=str(weld_dir),
        DEMO_CHUTE_FRAMES=str(chute_dir),
        DEMO_RTU_PORT=str(base_dir / "drive_client"),
    )
    leave_out = set()
    if serial is None:
        print("note: socat is not installed (`make demo` installs it): the RS-485 drive is left out")
        leave_out.add("drive1")
    if not rendered:
        print("note: ../shared/datasets/rice_grains is not here: the rice chute is left out")
        leave_out |= {"chute", "rice"}
    if n_weld == 0:
        print("note: ../shared/datasets/weld_photos is not here: the weld camera is left out")
        leave_out |= {"weldcam", "weld"}
    return DemoPlant(base_dir, mqtt_port, env, leave_out, recordings, truth, origin, rendered, n_weld, serial)


@dataclass
class RunningPlant:
    cell: Any  # the weld cell's OPC UA simulator: `cell.hold(name, value)` sets a tag
    feeder: asyncio.Task[None]  # the vibration gateway publishing; cancel it to stop the recordings


@contextlib.asynccontextmanager
async def running_plant(plant: DemoPlant) -> AsyncIterator[RunningPlant]:
    """The simulated machines on loopback (PLC, drive, weld cell, vibration gateway) until the block ends."""
    from adapters.modbus.config import ModbusRtuConfig, ModbusTcpConfig
    from adapters.modbus.simulator import SimulatedMachine
    from adapters.mqtt.simulator import GatewayStream, VibrationGatewayConfig, VibrationGatewaySimulator
    from adapters.opcua.config import OpcuaConfig
    from adapters.opcua.simulator import running_simulator
    from edge_runtime.config import load_device_profile, profile_dirs

    devices = profile_dirs()[0] / "devices"
    plc_cfg = load_device_profile(devices / "plc_tcp.yaml")
    assert isinstance(plc_cfg, ModbusTcpConfig)
    plc = SimulatedMachine(plc_cfg, vary=True)
    weld_cell = load_device_profile(devices / "weld_cell_opcua.yaml")
    assert isinstance(weld_cell, OpcuaConfig)
    gateway = VibrationGatewaySimulator(
        VibrationGatewayConfig(
            id="gw-sim",
            port=plant.mqtt_port,
            streams=[GatewayStream(stream=s) for s in plant.recordings],
            topic="plant/line1/{stream}/vib",
        ),
        plant.recordings,
    )
    async with contextlib.AsyncExitStack() as stack:
        await plc.start(int(plant.env["DEMO_PLC_PORT"]))
        stack.push_async_callback(plc.stop)
        if plant.with_drive:
            drive_cfg = load_device_profile(devices / "old_drive_rtu.yaml").model_copy(update={"parity": "N"})
            assert isinstance(drive_cfg, ModbusRtuConfig)
            drive = SimulatedMachine(drive_cfg, vary=True)
            await drive.start(str(plant.base_dir / "drive_dev"))
            stack.push_async_callback(drive.stop)
        cell = await stack.enter_async_context(
            running_simulator(
                weld_cell,
                port=int(plant.env["DEMO_WELD_OPCUA_PORT"]),
                animate=True,
                hold={"hall_temp": hall_temperature(0.0)},
            )
        )
        await gateway.open()
        stack.push_async_callback(gateway.close)
        feeder = asyncio.create_task(gateway.run())
        try:
            yield RunningPlant(cell, feeder)
        finally:
            await cancel_and_wait(feeder)  # one cancel() can be lost in Python 3.11's wait_for
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


def run_demo(
    *,
    seconds: float = 30.0,
    data_dir: str | None = None,
    on_started: Callable[[Service], None] | None = None,
    stop: threading.Event | None = None,
    chute_frames: int | None = None,
) -> int:
    """Run the demo for `seconds` (or until `stop` is set); `on_started` is called on the event loop once the
    service runs, so a caller (the operator page's browser test) can observe it. The chute camera loops over
    `chute_frames` rendered frames (default: ten per second of the run, 20 to 400; fewer start faster)."""
    from edge_runtime.config import ConfigError, load_deployment
    from edge_runtime.logs import setup_logging

    setup_logging("warning")
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # the demo's servers run without security on purpose
    try:
        find_mosquitto()
    except MosquittoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    with Mosquitto() as broker, tempfile.TemporaryDirectory(prefix="edge-runtime-demo-") as tmp:
        n_chute = chute_frames or max(20, min(400, round(seconds * 10)))  # one pass of the cold snap per run
        try:
            plant = prepare_plant(
                Path(tmp), broker.port, chute_frames=n_chute, data_dir=Path(data_dir) if data_dir else None
            )
        except (OSError, ValueError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
        try:
            with _env(**plant.env):
                try:
                    deployment = load_deployment(plant.deployment_file())
                except ConfigError as exc:
                    print(f"demo: the embedded deployment is invalid:\n{exc}", file=sys.stderr)
                    return 2
            board = Board(
                plant.truth, task_of={p.id: p.task.kind for p in deployment.pipelines}, chute_frames=plant.rendered
            )
            weld_data = shared_dataset("weld_photos")
            board.weld_labels = weld_data / "labels" if weld_data else None
            board.weld_images = plant.base_dir / "weld_images"
            env = plant.env
            print(
                f"edge-runtime demo for {seconds:g} s: "
                + ("1990s drive on Modbus RTU (virtual RS-485), " if plant.with_drive else "")
                + f"vibration gateway ({len(plant.recordings)} streams from {plant.origin}) "
                f"over MQTT 127.0.0.1:{broker.port}, PLC on Modbus TCP :{env['DEMO_PLC_PORT']}, weld cell on "
                f"OPC UA :{env['DEMO_WELD_OPCUA_PORT']}"
                + ("" if "chute" in plant.leave_out else ", rice chute camera")
                + ("" if "weldcam" in plant.leave_out else ", weld camera")
                + "; results on MQTT "
                f"edge/<pipeline>/result, OPC UA opc.tcp://127.0.0.1:{env['DEMO_SCADA_PORT']}, PLC coils 100-115"
            )
            print(f"operator page: http://127.0.0.1:{env['DEMO_UI_PORT']}/  (open it in a browser)", flush=True)
            elapsed, service = asyncio.run(_run(deployment, plant, board, seconds, on_started, stop))
        finally:
            plant.close()
        _summary(board, service, elapsed)
    return 0


def _serial_line(tmp: Path) -> subprocess.Popen[bytes] | None:
    """A virtual RS-485 line: a socat pty pair, `drive_dev` for the simulated drive, `drive_client` for us."""
    socat = shutil.which("socat")
    if socat is None:
        return None
    proc = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={tmp / 'drive_dev'}", f"pty,raw,echo=0,link={tmp / 'drive_client'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not ((tmp / "drive_dev").exists() and (tmp / "drive_client").exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            return None
        time.sleep(0.02)
    return proc


async def _run(
    deployment: Any,
    plant: DemoPlant,
    board: Board,
    seconds: float,
    on_started: Callable[[Service], None] | None = None,
    stop_early: threading.Event | None = None,
) -> tuple[float, Any]:
    from edge_runtime.service import Service

    service = Service(deployment, base_dir=plant.base_dir)
    service.load()  # models are verified here, before any machine starts
    service.result_observers.append(board.on_result)
    service.sample_observers.append(board.on_samples)
    async with running_plant(plant) as machines:
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop, drain_s=30.0))
        await service.started.wait()
        if on_started is not None:
            on_started(service)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0  # a loaded gateway takes seconds to build its OPC UA servers

        def stopped() -> bool:
            return stop_early is not None and stop_early.is_set()

        while not service.connected() and loop.time() < deadline and not stopped():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        t0 = loop.time()
        next_board = 3.0
        while (elapsed := loop.time() - t0) < seconds and not stopped():
            machines.cell.hold("hall_temp", hall_temperature(elapsed / seconds))
            await asyncio.sleep(min(0.2, seconds - elapsed))
            if loop.time() - t0 >= next_board:
                next_board += 3.0
                board.print_board(loop.time() - t0, service)
        elapsed = loop.time() - t0
        await cancel_and_wait(machines.feeder)
        with contextlib.suppress(asyncio.CancelledError):
            await machines.feeder
        stop.set()  # the service stops its inputs and waits until every result is delivered (or drain_s passes)
        await runner
    return elapsed, service


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _summary(board: Board, service: Any, elapsed: float) -> None:
    print("\n== summary " + "=" * 90)
    total = sum(board.vib_windows.values())
    print(f"{'stream':<10} {'truth':<11} {'windows':>7} {'correct':>8}")
    for stream, n in board.vib_windows.items():
        print(f"{stream:<10} {board.truth.get(stream, '?'):<11} {n:>7} {board.vib_correct[stream] / n:>8.1%}")
    correct = sum(board.vib_correct.values())
    print(
        f"vibration: {total} windows in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.1f} windows/s, real-time "
        f"replay), fault class correct {correct / max(total, 1):.1%}"
    )
    if board.rice_frames:
        print(
            f"rice:      {board.rice_frames} frames ({board.rice_frames / elapsed:.1f}/s), {board.rice_grains} grains; "
            f"off-type/broken ejected {board.rice_caught}/{board.rice_should}, "
            f"good grains ejected {board.rice_false}/{board.rice_good}"
        )
    if board.weld_frames:
        print(
            f"weld:      {board.weld_frames} frames, {board.weld_rejects} rejected; reject/accept agrees with the "
            f"photos' labels on {board.weld_agree}/{board.weld_labelled}"
        )
    if board.hall_c is not None:
        heater = "never" if board.heater_on_at_c is None else f"at {board.heater_on_at_c:+.1f} degC"
        preheat = "never" if board.preheat_at_c is None else f"at {board.preheat_at_c:+.1f} degC"
        print(
            f"cold snap: hall down to {board.hall_c:+.1f} degC; lowest lens transmission {board.lens_min:.2f}, "
            f"lens heater switched on {heater}; weld preheat called for {preheat}"
        )
    for pipeline, values in board.latency_ms.items():
        print(f"latency {pipeline:<9} p50 {_pct(values, 50):6.1f} ms   p99 {_pct(values, 99):6.1f} ms")
    for name, sink in service.sinks.items():
        extra = ""
        if hasattr(sink, "latency_ms"):
            with contextlib.suppress(Exception):
                lat = sink.latency_ms()
                extra = f", write latency p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms"
        print(
            f"sink {name:<9} acknowledged {sink.stats['acknowledged']}, failures {sink.stats['delivery_failures']}"
            f"{extra}"
        )
    print(f"outbox: {service.outbox.pending_rows} results left undelivered")


def _recordings(data_dir: Path | None) -> tuple[dict[str, Any], dict[str, str], str]:
    """Recordings to replay per stream, their true class, and where they came from."""
    from adapters.mqtt.simulator import Waveform, load_waveform
    from edge_runtime.tools.datasets import load_excerpt

    data = data_dir or shared_dataset("cwru_bearing")
    if data is not None and all((data / f).is_file() for f, _ in DEMO_RECORDINGS.values()):
        recs = {s: load_waveform(data / f) for s, (f, _) in DEMO_RECORDINGS.items()}
        return recs, {s: fault for s, (_, fault) in DEMO_RECORDINGS.items()}, str(data)
    print(
        "note: the CWRU recordings (../shared/datasets/cwru_bearing) are not here; "
        "replaying the bundled excerpt (edge_runtime/data/cwru_excerpt.npz) instead"
    )
    names = {"normal": "pump1", "ball": "fan2", "inner_race": "motor3", "outer_race": "gearbox4"}
    recs, truth = {}, {}
    for rec in load_excerpt():
        stream = names.get(rec.fault, rec.fault)
        if stream not in recs:
            recs[stream] = Waveform(np.asarray(rec.signal, dtype=np.float32), rec.fs_hz)
            truth[stream] = rec.fault
    return recs, truth, "the bundled excerpt"


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for the `${...}` references of the embedded deployment, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
