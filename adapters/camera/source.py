"""The camera source: frames from any OpenCV-readable feed (device, RTSP/HTTP URL, video file, image folder).

`cv2.VideoCapture.read` blocks, so capture runs in one thread per camera and hands frames to the event loop
through a small drop-oldest buffer: a slow consumer sees the newest frames, never a growing backlog, and every
frame it missed is counted in `stats["frames_dropped"]`. A lost device or URL stream raises `AdapterError` so
`adapters.supervise.supervise` reopens it. OpenCV is imported when a camera opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from adapters.base import AdapterError, Frame, Stats, now_ns
from adapters.camera.config import IMAGE_SUFFIXES, CameraConfig
from adapters.supervise import DecodeGuard

__all__ = ["CameraSource", "SourceKind", "classify_source", "redact"]

log = logging.getLogger("adapters.camera")

_DEVICE_PATH = re.compile(r"^/dev/video\d+$")
_URL_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")

Image = npt.NDArray[np.uint8]
SourceKind = Literal["device", "url", "file", "folder"]


def classify_source(source: int | str) -> SourceKind:
    """What a `source` names; looks at the file system, so it runs when the camera opens, not at validation."""
    if isinstance(source, int) or source.isdigit() or _DEVICE_PATH.match(source):
        return "device"
    if "://" in source:
        return "url"
    return "folder" if os.path.isdir(source) else "file"


def redact(source: int | str) -> str:
    """The source as it may appear in logs and frame metadata: URL credentials removed."""
    return _URL_USERINFO.sub(r"\1***@", str(source))


# --------------------------------------------------------------------------------------------------------------
# Readers: blocking, used only from the capture thread


class _Reader(Protocol):
    paced: bool  # True: emit at the playback rate; False: a live feed, read as fast as it delivers

    def read(self) -> tuple[Image, dict[str, float | str]] | None:
        """The next image and its metadata; None at the end of a finite source; AdapterError when lost."""
        ...

    def release(self) -> None: ...


def _as_bgr(image: Any) -> Image:
    import cv2

    array = np.asarray(image)
    if array.ndim == 2:
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    elif array.ndim != 3 or array.shape[2] not in (3, 4) or array.size == 0:
        raise AdapterError(f"image of shape {array.shape} is neither grey, BGR nor BGRA")
    elif array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.dtype != np.uint8:
        array = cv2.convertScaleAbs(array)
    return np.asarray(array, dtype=np.uint8)


def decode_image(data: bytes) -> Image:
    """The BGR uint8 image of encoded bytes (JPEG, PNG, BMP, TIFF...); raises on anything else. Callers go
    through a `DecodeGuard`, so hostile bytes are counted, never raised out of the capture thread."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise AdapterError(f"{len(data)} bytes are not a decodable image")
    return _as_bgr(image)


class _CaptureReader:
    """cv2.VideoCapture on a device, a URL or a video file."""

    def __init__(self, config: CameraConfig, kind: SourceKind) -> None:
        self.config, self.kind = config, kind
        self.paced = kind == "file"
        self.label = redact(config.source)
        self._cap = self._open()

    def _open(self) -> Any:
        import cv2

        cfg, source = self.config, self.config.source
        if self.kind == "device":
            cap = cv2.VideoCapture(int(source) if isinstance(source, int) or source.isdigit() else source)
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not the driver's backlog
                if cfg.width:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                if cfg.height:
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
                if cfg.fps:
                    cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        elif self.kind == "url":
            # RTSP over TCP: UDP loses packets on busy plant networks and smears frames; an integrator's own
            # OPENCV_FFMPEG_CAPTURE_OPTIONS wins
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
            ms = int(cfg.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG, params)
        else:
            if not os.path.isfile(str(source)):
                raise AdapterError(f"camera {cfg.id}: no such file {source}")
            cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            cap.release()
            raise AdapterError(f"camera {cfg.id}: cannot open {self.kind} {self.label}")
        return cap

    def file_fps(self) -> float:
        import cv2

        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        return fps if 0 < fps <= 1000 else 25.0

    def read(self) -> tuple[Image, dict[str, float | str]] | None:
        ok, image = self._cap.read()
        if ok and image is not None:
            return _as_bgr(image), {"source": self.label}
        if self.kind == "file":
            if not self.config.loop:
                return None
            self._cap.release()
            self._cap = self._open()  # reopen, not seek: a file replaced or removed on disk is noticed
            ok, image = self._cap.read()
            if ok and image is not None:
                return _as_bgr(image), {"source": self.label}
            raise AdapterError(f"camera {self.config.id}: no frames in {self.label}")
        if not self.config.reconnect:
            return None
        raise AdapterError(f"camera {self.config.id}: {self.kind} stream lost ({self.label})")

    def release(self) -> None:
        self._cap.release()


def _read_image(path: Path) -> Image:
    return decode_image(path.read_bytes())


class _FolderReader:
    """Images of a folder in sorted name order; unreadable files are counted and skipped."""

    paced = True

    def __init__(self, config: CameraConfig, stats: Stats) -> None:
        self.config, self.stats = config, stats
        self.folder = Path(str(config.source))
        self._files = self._list()
        self._next = 0
        self._bad_burst = 0
        self._guard = DecodeGuard("image_unreadable", stats, "frames_unreadable", camera=config.id)

    def _list(self) -> list[Path]:
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise AdapterError(f"camera {self.config.id}: no images in {self.folder}")
        return files

    def read(self) -> tuple[Image, dict[str, float | str]] | None:
        readable_in_pass = False
        while True:
            if self._next >= len(self._files):
                if not self.config.loop:
                    return None
                if not readable_in_pass and self._bad_burst >= len(self._files):
                    raise AdapterError(f"camera {self.config.id}: no readable image in {self.folder}")
                self._files, self._next = self._list(), 0  # new files in the folder join the next pass
            path = self._files[self._next]
            self._next += 1
            image = self._guard(_read_image, path, file=path.name)
            if image is None:
                self._bad_burst += 1
                continue
            if self._bad_burst:
                log.info("event=images_readable_again camera=%s skipped=%d", self.config.id, self._bad_burst)
            self._bad_burst, readable_in_pass = 0, True
            return image, {"source": path.name}

    def release(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------------------
# Source


class _Feed:
    """Frames from the capture thread to the event loop: a drop-oldest buffer, an end mark and the error."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, stats: Stats) -> None:
        self._loop, self._stats = loop, stats
        self._buffer: deque[Frame] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._ended = False
        self._error: BaseException | None = None

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, frame: Frame) -> None:
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self._stats["frames_dropped"] += 1
            self._buffer.append(frame)
        self._wake()

    def end(self, error: BaseException | None) -> None:
        with self._lock:
            self._ended, self._error = True, error
        self._wake()

    async def get(self) -> Frame | None:
        """The oldest buffered frame; None once the source has ended and the buffer is empty."""
        while True:
            with self._lock:
                if self._buffer:
                    return self._buffer.popleft()
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    return None
                self._ready.clear()
            await self._ready.wait()


class CameraSource:
    """Frames from one camera (see `CameraConfig.source`) on the stream `<id>.image`.

    A thread owns the OpenCV capture, paces files and folders at `fps`, and stamps each frame when
    it is captured; `stream()` drains its buffer. End of a non-looping file or folder ends the stream.

    Example::

        camera = CameraSource(CameraConfig(kind="camera", id="chute1", source="rtsp://10.0.4.31:554/ch1"))
        await supervise(camera, emit)
    """

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.name = config.id
        self.stream_name = f"{config.id}.image"
        self.stats = Stats()
        self._reader: _Reader | None = None
        self._feed: _Feed | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    async def open(self) -> None:
        kind = classify_source(self.config.source)
        reader = await asyncio.to_thread(self._make_reader, kind)
        period = self._period_s(kind, reader)
        self._reader = reader
        self._feed = _Feed(asyncio.get_running_loop(), self.config.buffer_frames, self.stats)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._capture, args=(reader, self._feed, self._stop, period), name=f"camera-{self.name}", daemon=True
        )
        self._thread.start()
        log.info("event=camera_open camera=%s kind=%s source=%s", self.name, kind, redact(self.config.source))

    def _make_reader(self, kind: SourceKind) -> _Reader:
        if kind == "folder":
            return _FolderReader(self.config, self.stats)
        return _CaptureReader(self.config, kind)

    def _period_s(self, kind: SourceKind, reader: _Reader) -> float | None:
        """Seconds between frames: the playback period of paced sources, the cap of live ones (None: no cap)."""
        fps = self.config.fps
        if fps is None:
            if kind == "file" and isinstance(reader, _CaptureReader):
                fps = reader.file_fps()
            elif kind == "folder":
                fps = 10.0
        return None if fps is None else 1.0 / fps

    def _capture(self, reader: _Reader, feed: _Feed, stop: threading.Event, period: float | None) -> None:
        """Capture thread: read, pace or cap, stamp, buffer; ends on stop, end of source or error."""
        error: BaseException | None = None
        due = time.monotonic()
        index = 0
        try:
            while not stop.is_set():
                if reader.paced and period is not None and stop.wait(max(0.0, due - time.monotonic())):
                    break
                item = reader.read()
                t_ns = now_ns()
                if item is None:
                    break
                now = time.monotonic()
                if period is not None:
                    if not reader.paced and now < due:  # a live feed faster than the cap
                        self.stats["frames_skipped"] += 1
                        continue
                    due = max(due + period, now - period)  # after a stall, catch up one period at most
                image, meta = item
                meta["frame_index"] = index
                index += 1
                feed.put(Frame(self.stream_name, t_ns, image, meta))
        except Exception as exc:  # handed to stream(), which raises it so the supervisor reopens
            error = exc if isinstance(exc, AdapterError) else AdapterError(f"camera {self.name}: {exc!r}")
        finally:
            reader.release()
            feed.end(error)

    async def stream(self) -> AsyncIterator[Frame]:
        feed = self._feed
        if feed is None:
            raise AdapterError(f"camera {self.name} is not open")
        while True:
            frame = await feed.get()
            if frame is None:
                log.info("event=camera_end camera=%s", self.name)
                return
            self.stats["frames"] += 1
            yield frame

    async def close(self) -> None:
        self._stop.set()
        thread, reader = self._thread, self._reader
        self._thread, self._reader, self._feed = None, None, None
        if thread is not None:
            await asyncio.to_thread(thread.join, self.config.timeout_s + 1.0)
            if thread.is_alive():  # blocked in a device read; it releases the capture when the read returns
                log.warning("event=camera_thread_stuck camera=%s", self.name)
        elif reader is not None:
            reader.release()
