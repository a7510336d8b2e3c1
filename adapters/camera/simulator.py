"""The simulated rice chute and a network camera to serve it: tooling for tests, benchmarks, the demo and
`edge-runtime simulate`; the runtime never imports this module.

`ChuteSimulator` composes real single-grain photographs (`../shared/datasets/rice_grains`) onto a chute plate,
with a known share of off-type and broken grains and the truth box of every grain, so the sorter can be
demonstrated and tested on real grain images. `MjpegServer` serves any frame function as an HTTP MJPEG network
camera; `serve_chute` runs the two together, and a deployment's camera reads the chute from its `url` exactly as
it reads a real camera. For scoring against the truth, `ChuteSimulator.write_frames` renders frames into a folder
(a camera `source:` too) with `truth.csv` keyed by file name.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from adapters.base import AdapterError, Stats, StrictModel
from adapters.camera.config import IMAGE_SUFFIXES, CameraConfig

__all__ = [
    "ChuteSimulator",
    "ChuteSimulatorConfig",
    "GrainTruth",
    "MjpegServer",
    "serve_chute",
    "simulate",
    "truth_json",
]

log = logging.getLogger("adapters.camera")

REPO_ROOT = Path(__file__).resolve().parents[2]  # relative data directories are also looked up beside the code
_NOISE_PAD = 64

Image = npt.NDArray[np.uint8]


class ChuteSimulatorConfig(StrictModel):
    """A rice chute seen by an area camera: real grain photographs falling across a plate."""

    data_dir: str = Field(
        "../shared/datasets/rice_grains",
        description="Folder with one sub-folder of single-grain images per variety; a relative path is looked up "
        "from the working directory, then from the repository root.",
    )
    variety: str = Field("Basmati", min_length=1, description="Declared variety of the lot (a sub-folder name).")
    off_type_share: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of grains drawn from another variety (the purity defect to eject)."
    )
    broken_share: float = Field(
        0.02, ge=0.0, le=1.0, description="Share of grains cut across their long axis (broken kernels)."
    )
    touching_share: float = Field(
        0.02, ge=0.0, le=1.0, description="Share of grains that land touching the previous grain (a touching pair)."
    )
    grains_per_s: float = Field(150.0, ge=0.0, le=100_000.0, description="Mean grain flow through the field of view.")
    fps: float = Field(25.0, gt=0.0, le=1000.0, description="Frame rate: each frame shows the grains of 1/fps s.")
    width: int = Field(640, ge=64, le=8192, description="Frame width in pixels (across the chute).")
    height: int = Field(480, ge=64, le=8192, description="Frame height in pixels (along the fall).")
    grain_scale: float = Field(
        0.35, gt=0.0, le=4.0, description="Frame pixels per data-set pixel (0.35: a 190 px grain is 66 px long)."
    )
    background_level: int = Field(40, ge=0, le=255, description="Mean grey level of the chute plate.")
    background_noise: float = Field(2.0, ge=0.0, le=50.0, description="Per-frame sensor noise, grey levels (std).")
    images_per_variety: int = Field(
        300, ge=1, le=100_000, description="Images sampled per variety, loaded lazily on first use and cached."
    )
    seed: int = Field(0, ge=0, description="Seed: the same seed and data set give the same frames.")


@dataclass(frozen=True, slots=True)
class GrainTruth:
    """Where one simulated grain is in its frame and what it is."""

    x: int
    y: int
    w: int
    h: int
    variety: str
    broken: bool
    off_type: bool
    length_px: float  # along the grain's long axis, after breaking and scaling
    angle_deg: float


@dataclass(frozen=True, slots=True)
class _Grain:
    """A grain cut out of its photograph, long axis horizontal."""

    bgr: npt.NDArray[np.float32]
    alpha: npt.NDArray[np.float32]


def _resolve_data_dir(data_dir: str) -> Path:
    path = Path(data_dir)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO_ROOT / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise AdapterError(f"rice grain data set not found: {data_dir} (looked in {', '.join(map(str, candidates))})")


def _cut_grain(image: Image, threshold: int = 40) -> _Grain | None:
    """Mask the largest bright blob of a grain-on-black photograph and turn its long axis horizontal."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    count, labels, blob_stats, _ = cv2.connectedComponentsWithStats((gray > threshold).astype(np.uint8))
    if count < 2:
        return None
    blob = 1 + int(np.argmax(blob_stats[1:, cv2.CC_STAT_AREA]))
    mask = (labels == blob).astype(np.float32)
    m = cv2.moments(mask, binaryImage=True)
    if m["m00"] < 20:
        return None
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    angle = 0.5 * math.degrees(math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"]))
    side = math.ceil(math.hypot(*gray.shape)) + 2
    rot = np.asarray(cv2.getRotationMatrix2D((cx, cy), angle, 1.0), dtype=np.float64)
    rot[:, 2] += (side / 2 - cx, side / 2 - cy)
    bgr = cv2.warpAffine(image.astype(np.float32), rot, (side, side), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, rot, (side, side), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(alpha > 0.5)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return _Grain(np.ascontiguousarray(bgr[y0:y1, x0:x1]), np.ascontiguousarray(alpha[y0:y1, x0:x1]))


class ChuteSimulator:
    """Frames of a rice chute made of real grain photographs, with the truth of every grain.

    Each frame is a fresh strip: the grains that crossed the field of view during 1/fps s (Poisson), each cut
    from a data-set image with a threshold mask, optionally broken across its long axis, turned and scaled at
    random, and mask-blended at a free spot on the plate (a few land touching their neighbour). Images are loaded
    on first use from a seeded sample of `images_per_variety` per variety and cached.

    Example::

        sim = ChuteSimulator(ChuteSimulatorConfig(variety="Jasmine", seed=7))
        image, truth = sim.next_frame()  # image: 480x640x3 uint8 BGR; truth: list[GrainTruth]
    """

    def __init__(self, config: ChuteSimulatorConfig) -> None:
        self.config = config
        self.data_dir = _resolve_data_dir(config.data_dir)
        self.varieties = sorted(p.name for p in self.data_dir.iterdir() if p.is_dir())
        if config.variety not in self.varieties:
            raise AdapterError(f"variety {config.variety!r} not in {self.data_dir} (found: {self.varieties})")
        self.others = [v for v in self.varieties if v != config.variety]
        self.stats = Stats()
        self._rng = np.random.default_rng(config.seed)
        self._files: dict[str, list[Path]] = {}
        self._cache: dict[Path, _Grain | None] = {}
        h, w = config.height, config.width
        plate_rng = np.random.default_rng([config.seed, 1])
        shade = np.linspace(-4.0, 4.0, h, dtype=np.float32)[:, None, None]  # uneven lighting along the fall
        texture = plate_rng.normal(0.0, 1.5, (h, w, 1)).astype(np.float32)  # fixed pattern of the plate
        plate = np.clip(np.rint(config.background_level + shade + texture), 0, 255)
        self._plate = np.ascontiguousarray(np.broadcast_to(plate, (h, w, 3)), dtype=np.int16)
        # sensor noise: one seeded field, a random window of it per frame (drawing 1M normals a frame costs more
        # than composing the grains)
        noise = plate_rng.normal(0.0, config.background_noise, (h + _NOISE_PAD, w + _NOISE_PAD, 3))
        self._noise = np.rint(noise).astype(np.int16)

    def _pool(self, variety: str) -> list[Path]:
        """A seeded sample of the variety's images; only names are listed, images load on first use."""
        pool = self._files.get(variety)
        if pool is None:
            names = sorted(p for p in (self.data_dir / variety).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not names:
                raise AdapterError(f"no images in {self.data_dir / variety}")
            pick_rng = np.random.default_rng([self.config.seed, 2, self.varieties.index(variety)])
            size = min(self.config.images_per_variety, len(names))
            pool = [names[i] for i in sorted(pick_rng.choice(len(names), size=size, replace=False))]
            self._files[variety] = pool
        return pool

    def _grain(self, variety: str) -> _Grain:
        import cv2

        pool = self._pool(variety)
        for _ in range(20):
            path = pool[int(self._rng.integers(len(pool)))]
            if path not in self._cache:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                self._cache[path] = None if image is None else _cut_grain(np.asarray(image, dtype=np.uint8))
            grain = self._cache[path]
            if grain is not None:
                return grain
            self.stats["images_unusable"] += 1
        raise AdapterError(f"no usable grain image in {self.data_dir / variety}")

    def _place(
        self, grain: _Grain, broken: bool
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], float, float]:
        """Break, turn and scale a grain; returns its colour, alpha, length and angle."""
        import cv2

        bgr, alpha = grain.bgr, grain.alpha
        length = float(bgr.shape[1])
        if broken:  # a real grain cut across its long axis; keep either end
            cut = max(2, int(length * self._rng.uniform(0.35, 0.65)))
            part = slice(0, cut) if self._rng.random() < 0.5 else slice(bgr.shape[1] - cut, None)
            bgr, alpha, length = bgr[:, part], alpha[:, part], float(cut)
        angle = float(self._rng.uniform(0.0, 180.0))
        scale = self.config.grain_scale
        h, w = alpha.shape
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        out_w = math.ceil(scale * (w * cos + h * sin)) + 2
        out_h = math.ceil(scale * (w * sin + h * cos)) + 2
        rot[:, 2] += (out_w / 2 - w / 2, out_h / 2 - h / 2)
        bgr = np.asarray(cv2.warpAffine(bgr, rot, (out_w, out_h), flags=cv2.INTER_LINEAR), dtype=np.float32)
        alpha = np.asarray(cv2.warpAffine(alpha, rot, (out_w, out_h), flags=cv2.INTER_LINEAR), dtype=np.float32)
        ys, xs = np.nonzero(alpha > 0.5)
        if ys.size == 0:
            return bgr[:0, :0], alpha[:0, :0], 0.0, angle
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        return bgr[y0:y1, x0:x1], alpha[y0:y1, x0:x1], length * scale, angle

    def _spot(
        self, occupied: npt.NDArray[np.int64], n_occupied: int, w: int, h: int, touch: GrainTruth | None
    ) -> tuple[int, int] | None:
        """A free position for a w x h box: beside `touch` if given, else at random; None if the plate is full."""
        cfg = self.config
        if w > cfg.width or h > cfg.height:
            return None
        boxes = occupied[:n_occupied]
        for attempt in range(40):
            if touch is not None and attempt < 8:  # overlap the neighbour's box by a few pixels
                x = touch.x + touch.w - int(self._rng.integers(1, max(2, w // 4)))
                y = touch.y + int(self._rng.integers(-h // 2, max(1, touch.h // 2)))
                ignore = n_occupied - 1
            else:
                x = int(self._rng.integers(0, cfg.width - w + 1))
                y = int(self._rng.integers(0, cfg.height - h + 1))
                ignore = -1
            if not (0 <= x <= cfg.width - w and 0 <= y <= cfg.height - h):
                continue
            hit = (
                (boxes[:, 0] < x + w + 2)
                & (x < boxes[:, 0] + boxes[:, 2] + 2)
                & (boxes[:, 1] < y + h + 2)
                & (y < boxes[:, 1] + boxes[:, 3] + 2)
            )
            if ignore >= 0:
                hit[ignore] = False
            if not hit.any():
                return x, y
        return None

    def next_frame(self) -> tuple[Image, list[GrainTruth]]:
        """The next frame (H x W x 3 uint8 BGR) and the truth of every grain in it."""
        cfg = self.config
        canvas = self._plate.copy()
        n = int(self._rng.poisson(cfg.grains_per_s / cfg.fps))
        occupied = np.zeros((n, 4), dtype=np.int64)
        truth: list[GrainTruth] = []
        for _ in range(n):
            off_type = bool(self.others) and self._rng.random() < cfg.off_type_share
            variety = self.others[int(self._rng.integers(len(self.others)))] if off_type else cfg.variety
            broken = bool(self._rng.random() < cfg.broken_share)
            touching = bool(truth) and self._rng.random() < cfg.touching_share
            bgr, alpha, length, angle = self._place(self._grain(variety), broken)
            h, w = alpha.shape
            spot = self._spot(occupied, len(truth), w, h, truth[-1] if touching else None) if h and w else None
            if spot is None:
                self.stats["grains_unplaced"] += 1
                continue
            x, y = spot
            region = canvas[y : y + h, x : x + w]
            a = alpha[:, :, None]
            region[...] = np.rint(region * (1.0 - a) + a * bgr)
            occupied[len(truth)] = (x, y, w, h)
            truth.append(GrainTruth(x, y, w, h, variety, broken, off_type, round(length, 1), round(angle, 1)))
        if cfg.background_noise > 0:
            dy, dx = (int(v) for v in self._rng.integers(0, _NOISE_PAD, 2))
            canvas += self._noise[dy : dy + cfg.height, dx : dx + cfg.width]
        self.stats["frames"] += 1
        self.stats["grains"] += len(truth)
        return np.clip(canvas, 0, 255, out=canvas).astype(np.uint8), truth

    def write_frames(self, directory: str | Path, n: int, *, suffix: str = ".png") -> list[list[GrainTruth]]:
        """Write n frames as `frame_000000.png`... plus `truth.csv` (one row per grain); returns the truth."""
        import cv2

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        truths: list[list[GrainTruth]] = []
        with (out / "truth.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", *GrainTruth.__slots__])
            for i in range(n):
                image, truth = self.next_frame()
                name = f"frame_{i:06d}{suffix}"
                if not cv2.imwrite(str(out / name), image):
                    raise AdapterError(f"could not write {out / name}")
                writer.writerows([name, *asdict(g).values()] for g in truth)
                truths.append(truth)
        return truths

    def write_video(self, path: str | Path, n: int, *, fourcc: str = "MJPG") -> list[list[GrainTruth]]:
        """Write n frames as a video file (MJPEG in AVI by default) at the simulator's fps; returns the truth."""
        import cv2

        cfg = self.config
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), cfg.fps, (cfg.width, cfg.height))
        if not writer.isOpened():
            raise AdapterError(f"could not open a {fourcc} writer for {path}")
        truths: list[list[GrainTruth]] = []
        try:
            for _ in range(n):
                image, truth = self.next_frame()
                writer.write(image)
                truths.append(truth)
        finally:
            writer.release()
        return truths


def truth_json(truth: list[GrainTruth]) -> str:
    """Compact truth for `Frame.meta["truth"]`: `[[x, y, w, h, variety, broken, off_type], ...]`."""
    rows = [[g.x, g.y, g.w, g.h, g.variety, int(g.broken), int(g.off_type)] for g in truth]
    return json.dumps(rows, separators=(",", ":"))


class MjpegServer:
    """An HTTP MJPEG camera on loopback (multipart/x-mixed-replace), fed by any frame function.

    OpenCV reads it as `http://127.0.0.1:<port>/stream.mjpg`. `stop()` cuts every client, as a camera that loses
    power does; a new server on the same port brings it back.
    """

    def __init__(
        self, frames: Callable[[], Image], *, fps: float, host: str = "127.0.0.1", port: int = 0, quality: int = 85
    ) -> None:
        self._frames, self._fps, self._host, self._port, self._quality = frames, fps, host, port, quality
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self.stats = Stats()

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/stream.mjpg"

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self._port = self.port

    async def stop(self) -> None:
        """Cut every client and stop listening; handlers end on their own (none is left to be cancelled)."""
        server, self._server = self._server, None
        self._stopping.set()
        if server is not None:
            server.close()
        for writer in list(self._clients):
            writer.transport.abort()
        handlers = set(self._clients.values())
        if handlers:
            await asyncio.wait(handlers, timeout=10.0)
        if server is not None:
            await server.wait_closed()

    def _jpeg(self) -> bytes:
        import cv2

        with self._lock:  # one frame function shared by every client
            image = self._frames()
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        if not ok:
            raise AdapterError("jpeg encoding failed")
        return bytes(data.tobytes())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients[writer] = task
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            writer.write(
                b"HTTP/1.0 200 OK\r\nCache-Control: no-cache\r\n"
                b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
            )
            period = 1.0 / self._fps
            due = time.monotonic()
            while not self._stopping.is_set():
                data = await asyncio.to_thread(self._jpeg)
                writer.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data))
                writer.write(data + b"\r\n")
                await asyncio.wait_for(writer.drain(), 10.0)
                self.stats["frames_sent"] += 1
                due = max(due + period, time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), due - time.monotonic())
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.stats["clients_lost"] += 1
        finally:
            self._clients.pop(writer, None)
            writer.transport.abort()


@contextlib.asynccontextmanager
async def serve_chute(
    chute: ChuteSimulatorConfig | None = None, *, fps: float | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[MjpegServer]:
    """A simulated chute served as an HTTP MJPEG camera for the duration of a `with` block.

    `port` 0 picks a free one; point a camera's `source:` at the yielded server's `url`. The simulator (which
    lists the data set) is built off the event loop. Example::

        async with serve_chute(ChuteSimulatorConfig(seed=7), fps=10) as server:
            camera = CameraSource(CameraConfig(kind="camera", id="chute", source=server.url))
    """
    chute = chute or ChuteSimulatorConfig()
    sim = await asyncio.to_thread(ChuteSimulator, chute)
    server = MjpegServer(lambda: sim.next_frame()[0], fps=fps or chute.fps, host=host, port=port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def simulate(
    config: CameraConfig, *, port: str | None, stop: asyncio.Event, chute: ChuteSimulatorConfig | None = None
) -> None:
    """Serve a simulated chute as the camera of a profile until `stop` is set (`edge-runtime simulate`).

    The chute uses `ChuteSimulatorConfig()` defaults unless `chute` is given; `port` is the TCP port (default
    8080); the profile's `fps`, when set, is the frame rate.
    """
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError(f"camera simulator {config.id}: port {port!r} is not a TCP port number")
    async with serve_chute(chute, fps=config.fps, port=int(port) if port else 8080) as server:
        log.info("event=camera_simulator_listening camera=%s url=%s", config.id, server.url)
        await stop.wait()
