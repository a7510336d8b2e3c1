"""The flight recorder: every `Reading` and `Frame` a deployment's sources emit, streamed to one file, and replayed
through a deployment's pipelines later (`edge-runtime record` / `edge-runtime replay`; format in docs/recording.md).

What is recorded is what the service routes: raw samples as the adapters emit them, before windowing and
compensation, taken by a sample observer on `Service._route` (the path `run` uses). Replay feeds them to the same
router, so windowing, compensation, the task and the model all run again: a recording made under one model can be
replayed through another.

The file is a magic, then chunks, each `kind, raw length, compressed length, CRC-32, n records` and a zlib stream:
one header chunk (JSON), sample chunks, one trailer chunk (JSON). A writer thread compresses and fsyncs a chunk at
least once a second, so a power cut loses at most the last second; a reader stops at the last complete chunk.
Memory is bounded: the observer blocks (back-pressure to the sources) when the writer falls behind by more than
`max_buffer_bytes`, rather than hold an unbounded backlog or drop what a recording exists to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import yaml

from adapters.base import EdgeRuntimeError, Frame, Reading, Result, Sample, jsonable
from edge_runtime import __version__
from edge_runtime.config import Deployment, OutboxConfig, profile_dirs
from edge_runtime.yamlsrc import resolve_profile

__all__ = [
    "FORMAT",
    "Recorded",
    "Recorder",
    "Recording",
    "RecordingError",
    "compare_results",
    "deterministic",
    "device_resolver",
    "header_for",
    "record",
    "replay",
    "replay_deployment",
]

log = logging.getLogger("edge_runtime.recorder")

FORMAT = "edge-runtime-recording/1"
MAGIC = b"EDGE-REC"
VERSION = 1
_FILE_HEAD = struct.Struct("<8sH")  # magic, format version
_CHUNK = struct.Struct("<cIIII")  # kind (H header, S samples, T trailer), raw length, compressed length, crc32, records
_RECORD = struct.Struct("<IIqq")  # meta length, data length, t_ns (the adapter's stamp), rx_ns (routed at, wall clock)
_MAX_CHUNK_BYTES = 1 << 30  # a reader refuses a length beyond this (a damaged length field, not a real chunk)


class RecordingError(EdgeRuntimeError):
    """A recording cannot be written or read (not a recording, unknown version, damaged header)."""


# -- writing -----------------------------------------------------------------------------------------------------


def device_resolver(deployment: Deployment) -> Callable[[str], str]:
    """Stream -> id of the device that produces it (by the devices' stream prefixes), cached per stream."""
    prefixes = [(d.id, d.stream_prefixes()) for d in deployment.devices]
    cache: dict[str, str] = {}

    def device_of(stream: str) -> str:
        found = cache.get(stream)
        if found is None:
            head = stream.split(".", 1)[0]
            found = next((dev for dev, pats in prefixes if any(fnmatch.fnmatchcase(head, p) for p in pats)), "")
            if len(cache) > 100_000:  # a flood of new streams costs bounded memory
                cache.clear()
            cache[stream] = found
        return found

    return device_of


class Recorder:
    """A sample observer (`add_batch`, in `Service.sample_observers`) that streams every sample to `path`.

    `add` encodes one sample into the current chunk (one copy of its bytes); a writer thread compresses (zlib,
    which releases the GIL) and appends chunks with an fsync. Call `close` once, after the sources stopped.
    """

    def __init__(
        self,
        path: Path,
        header: Mapping[str, Any],
        *,
        device_of: Callable[[str], str] = lambda stream: "",
        chunk_bytes: int = 2 << 20,
        max_buffer_bytes: int = 8 << 20,
        flush_s: float = 1.0,
        level: int = 1,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.on_error = on_error  # called from the writer thread when writing failed (the recording is over)
        self.device_of = device_of
        self.chunk_bytes = chunk_bytes
        self.max_buffer_bytes = max(max_buffer_bytes, chunk_bytes)
        self.flush_s = flush_s
        self.level = level
        self.started_ns = time.time_ns()
        self.devices: Counter[str] = Counter()
        self.streams: Counter[str] = Counter()
        self.frames = 0
        self.readings = 0
        self.raw_bytes = 0
        self.file_bytes = 0
        self.chunks = 0
        self.blocked = 0  # times `add` waited for the writer (the disk or compression could not keep up)
        self._meta: dict[tuple[Any, ...], bytes] = {}
        self._buf = bytearray()
        self._n = 0
        self._closing = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        try:
            self._file: BinaryIO = path.open("wb")
        except OSError as exc:
            raise RecordingError(f"cannot write {path}: {exc}") from exc
        try:
            self._file.write(_FILE_HEAD.pack(MAGIC, VERSION))
            self._write_chunk(b"H", json.dumps(jsonable(dict(header))).encode(), 0)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._file.close()
            raise RecordingError(f"cannot write {path}: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def add_batch(self, samples: Sequence[Sample]) -> None:
        """Append routed samples in order (the service's sample observer)."""
        for sample in samples:
            self.add(sample)

    def add(self, sample: Sample) -> None:
        """Append one sample (called on the event loop for every routed sample)."""
        rx_ns = time.time_ns()
        device = self.device_of(sample.stream)
        if isinstance(sample, Frame):
            data = _contiguous(sample.image)
            meta = json.dumps(
                {"k": "f", "d": device, "s": sample.stream, "dt": data.dtype.str, "sh": data.shape,
                 "m": jsonable(dict(sample.meta))},
                separators=(",", ":"),
            ).encode()  # fmt: skip
        else:
            data = _contiguous(np.asarray(sample.value))
            key = (device, sample.stream, data.dtype.str, data.shape, sample.quality, sample.unit, sample.rate_hz)
            cached = self._meta.get(key)
            if cached is None or data.dtype.hasobject:
                fields: dict[str, Any] = {"k": "r", "d": device, "s": sample.stream, "q": sample.quality}
                fields.update(dt=data.dtype.str, sh=data.shape, u=sample.unit, hz=sample.rate_hz)
                if data.dtype.hasobject:  # e.g. a decoded string held as an object: kept as JSON, not as bytes
                    fields.update(dt="json", v=jsonable(data.tolist()))
                    data = np.empty(0, dtype=np.uint8)
                cached = json.dumps(fields, separators=(",", ":")).encode()
                if fields["dt"] != "json":
                    if len(self._meta) > 100_000:
                        self._meta.clear()
                    self._meta[key] = cached
            meta = cached
        payload = data.data.cast("B") if data.size else b""
        with self._cond:
            if self._error is not None or self._closing:
                return  # the writer failed (logged once) or the recording is over
            self.devices[device] += 1
            if sample.stream in self.streams or len(self.streams) < 10_000:  # counts of a flood stay bounded
                self.streams[sample.stream] += 1
            while len(self._buf) >= self.max_buffer_bytes and self._error is None:
                self.blocked += 1
                self._cond.wait()
            self._buf += _RECORD.pack(len(meta), len(payload), sample.t_ns, rx_ns)
            self._buf += meta
            self._buf += payload
            self._n += 1
            if isinstance(sample, Frame):
                self.frames += 1
            else:
                self.readings += 1
            if len(self._buf) >= self.chunk_bytes:
                self._cond.notify_all()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: len(self._buf) >= self.chunk_bytes or self._closing, self.flush_s)
                buf, n = self._buf, self._n
                self._buf, self._n = bytearray(), 0
                self._cond.notify_all()
                closing = self._closing
            if buf:
                try:
                    self._write_chunk(b"S", buf, n)
                except Exception as exc:  # a full disk: stop recording, keep what is on disk readable
                    log.error("event=recording_write_failed file=%s error=%r", self.path, exc)
                    with self._cond:
                        self._error = exc
                        self._cond.notify_all()
                    if self.on_error is not None:
                        self.on_error()
                    return
            if closing:
                return

    def _write_chunk(self, kind: bytes, raw: bytes | bytearray, n: int) -> None:
        packed = zlib.compress(raw, self.level)
        self._file.write(_CHUNK.pack(kind, len(raw), len(packed), zlib.crc32(packed), n))
        self._file.write(packed)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.raw_bytes += len(raw)
        self.file_bytes = self._file.tell()
        self.chunks += 1

    def close(self, stopped_by: str = "stop") -> dict[str, Any]:
        """Write what is buffered and the trailer (counts); returns the trailer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        trailer = {
            "ended_utc": _utc(time.time_ns()),
            "stopped_by": stopped_by,
            "samples": self.frames + self.readings,
            "frames": self.frames,
            "readings": self.readings,
            "devices": dict(self.devices),
            "streams": dict(self.streams),
            "blocked": self.blocked,
            "error": None if self._error is None else repr(self._error),
        }
        if self._error is None:
            self._write_chunk(b"T", json.dumps(trailer).encode(), 0)
        trailer["file_bytes"] = self.file_bytes
        trailer["raw_bytes"] = self.raw_bytes
        self._file.close()
        return trailer


def _contiguous(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """C order for its bytes, keeping a scalar's shape `()` (np.ascontiguousarray would make it `(1,)`)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _utc(t_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ns / 1e9))


def _default_variant(model: str) -> str | None:
    from edge_runtime.inference import ModelError, read_manifest, resolve_model_dir

    try:
        return read_manifest(resolve_model_dir(model)).default_variant
    except ModelError:  # the service refuses such a model at start-up; the header keeps the config's None
        return None


def header_for(config_path: Path, deployment: Deployment) -> dict[str, Any]:
    """The header: versions, start, host, the config file as written (with the device profiles and calibration
    files it names) and the pipelines in the form `replay` rebuilds them from.

    The config text is stored as written: `${ENV}` references stay references. The pipelines section holds no
    connection settings, so no resolved secret lands in the file."""
    text = config_path.read_text(encoding="utf-8")
    profiles: dict[str, str] = {}
    raw = yaml.safe_load(text)
    entries = raw.get("devices") if isinstance(raw, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        name = entry.get("profile") if isinstance(entry, dict) else None
        found = resolve_profile(name, config_path.parent, profile_dirs()) if isinstance(name, str) else None
        if found is not None and isinstance(name, str):
            profiles[name] = found.read_text(encoding="utf-8")
    calibrations: dict[str, str] = {}
    pipelines = []
    for p in deployment.pipelines:
        data = p.model_dump(mode="json")
        data["outputs"] = []
        if p.model.variant is None:  # the file the live pipeline runs, not whatever default the folder has at replay
            data["model"]["variant"] = _default_variant(p.model.name)
        for i, layer in enumerate(data.get("compensation") or []):
            cal = layer.get("calibration")
            if cal:
                path = Path(cal) if Path(cal).is_absolute() else config_path.parent / cal
                key = f"calibrations/{p.id}-{i}-{path.name}"
                calibrations[key] = path.read_text(encoding="utf-8")
                layer["calibration"] = key
        pipelines.append(data)
    return {
        "format": FORMAT,
        "edge_runtime": __version__,
        "started_utc": _utc(time.time_ns()),
        "started_ns": time.time_ns(),
        "host": socket.gethostname(),
        "config": {"path": str(config_path), "text": text},
        "profiles": profiles,
        "calibrations": calibrations,
        "devices": [{"id": d.id, "kind": d.kind, "stream_prefixes": d.stream_prefixes()} for d in deployment.devices],
        "replay": {
            "service": {
                "max_streams": deployment.service.max_streams,
                "inference_workers": deployment.service.inference_workers,
            },
            "pipelines": pipelines,
        },
    }


async def record(
    config_path: Path,
    out: Path,
    *,
    seconds: float | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[Recorder], None] | None = None,
) -> dict[str, Any]:
    """Run the deployment's sources as `run` does (no pipelines, no sinks, no metrics or page, a private
    outbox) and record every sample until `stop` is set or `seconds` pass. Returns the trailer."""
    from edge_runtime.config import load_deployment
    from edge_runtime.service import Service

    deployment = load_deployment(config_path)
    header = header_for(config_path, deployment)
    with tempfile.TemporaryDirectory(prefix="edge-runtime-record-") as tmp:
        sources_only = deployment.model_copy(
            update={
                "pipelines": [],
                "sinks": [],
                "service": deployment.service.model_copy(
                    update={
                        "metrics_listen": None,
                        "ui_listen": None,  # the running service may hold both ports
                        "model_watch_s": 0,
                        "outbox": OutboxConfig(path=str(Path(tmp) / "outbox.sqlite")),  # never the live outbox
                    }
                ),
            }
        )
        service = Service(sources_only, base_dir=Path(tmp), config_dir=config_path.parent)
        service.load()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()

        def failed() -> None:  # the writer thread gave up (a full disk): end the recording
            loop.call_soon_threadsafe(stop.set)

        recorder = Recorder(out, header, device_of=device_resolver(deployment), on_error=failed)
        service.sample_observers.append(recorder.add_batch)
        if on_start is not None:
            on_start(recorder)
        stopped_by = "stop"
        try:
            await service.run(stop, run_for_s=seconds, drain_s=0.0)
            stopped_by = "error" if recorder.failed else "stop" if stop.is_set() else "seconds"
        finally:
            trailer = recorder.close(stopped_by)
    log.info(
        "event=recording_written file=%s samples=%d bytes=%d raw_bytes=%d",
        out,
        trailer["samples"],
        trailer["file_bytes"],
        trailer["raw_bytes"],
    )
    return trailer


# -- reading -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded sample: the device that produced it and the wall-clock time the service routed it."""

    device: str
    rx_ns: int
    sample: Sample


@dataclass
class Recording:
    """A recording file opened for reading: its header now, samples chunk by chunk (bounded memory)."""

    path: Path
    header: dict[str, Any] = field(default_factory=dict)
    trailer: dict[str, Any] | None = None
    truncated: bool = False  # the file ends inside a chunk or a chunk fails its CRC: read up to the last good one

    def __post_init__(self) -> None:
        try:
            with self.path.open("rb") as f:
                head = f.read(_FILE_HEAD.size)
                if len(head) < _FILE_HEAD.size or _FILE_HEAD.unpack(head)[0] != MAGIC:
                    raise RecordingError(f"{self.path}: not an edge-runtime recording")
                version = _FILE_HEAD.unpack(head)[1]
                if version != VERSION:
                    raise RecordingError(f"{self.path}: recording format version {version}, this reads {VERSION}")
                chunk = self._next_chunk(f)
        except OSError as exc:
            raise RecordingError(f"cannot read {self.path}: {exc}") from exc
        if chunk is None or chunk[0] != b"H":
            raise RecordingError(f"{self.path}: the header chunk is missing or damaged")
        self.header = json.loads(chunk[1])
        self.truncated = False

    def _next_chunk(self, f: BinaryIO) -> tuple[bytes, bytes, int] | None:
        head = f.read(_CHUNK.size)
        if not head:
            return None
        if len(head) < _CHUNK.size:
            self.truncated = True
            return None
        kind, raw_len, comp_len, crc, n = _CHUNK.unpack(head)
        if comp_len > _MAX_CHUNK_BYTES or raw_len > _MAX_CHUNK_BYTES:
            self.truncated = True
            return None
        packed = f.read(comp_len)
        if len(packed) < comp_len or zlib.crc32(packed) != crc:
            self.truncated = True
            return None
        raw = zlib.decompress(packed)
        if len(raw) != raw_len:
            self.truncated = True
            return None
        return kind, raw, n

    def chunks(self) -> Iterator[tuple[bytes, bytes, int]]:
        self.truncated = False
        with self.path.open("rb") as f:
            f.seek(_FILE_HEAD.size)
            while (chunk := self._next_chunk(f)) is not None:
                if chunk[0] == b"T":
                    self.trailer = json.loads(chunk[1])
                yield chunk

    def __iter__(self) -> Iterator[Recorded]:
        for kind, raw, _ in self.chunks():
            if kind == b"S":
                yield from _decode(raw)

    def samples(self) -> Iterator[Recorded]:
        return iter(self)

    def summary(self) -> dict[str, Any]:
        """Counts by device and stream, span and size, from a full read (so a truncated file has them too)."""
        devices: Counter[str] = Counter()
        streams: Counter[str] = Counter()
        first = last = None
        for rec in self:
            devices[rec.device] += 1
            streams[rec.sample.stream] += 1
            first = rec.rx_ns if first is None else first
            last = rec.rx_ns
        return {
            "file": str(self.path),
            "format": self.header.get("format"),
            "edge_runtime": self.header.get("edge_runtime"),
            "started_utc": self.header.get("started_utc"),
            "config": self.header.get("config", {}).get("path"),
            "samples": sum(devices.values()),
            "devices": dict(devices),
            "streams": len(streams),
            "seconds": 0.0 if first is None or last is None else round((last - first) / 1e9, 3),
            "bytes": self.path.stat().st_size,
            "complete": self.trailer is not None and not self.truncated,
            "stopped_by": None if self.trailer is None else self.trailer.get("stopped_by"),
        }


def _decode(raw: bytes) -> Iterator[Recorded]:
    view = memoryview(raw)
    pos, end = 0, len(raw)
    parsed: dict[bytes, Any] = {}  # a tag's meta repeats on every reading: parsed once per chunk
    while pos < end:
        meta_len, data_len, t_ns, rx_ns = _RECORD.unpack_from(view, pos)
        pos += _RECORD.size
        text = bytes(view[pos : pos + meta_len])
        meta = parsed.get(text)
        if meta is None:
            meta = parsed[text] = json.loads(text)
        pos += meta_len
        data = view[pos : pos + data_len]
        pos += data_len
        if meta["dt"] == "json":
            value = np.array(meta["v"], dtype=object)
        else:  # a copy: writable, as the adapter's was, and independent of the chunk's buffer
            value = np.frombuffer(data, dtype=np.dtype(meta["dt"])).reshape(tuple(meta["sh"])).copy()
        sample: Sample
        if meta["k"] == "f":
            sample = Frame(meta["s"], t_ns, value, meta.get("m") or {})
        else:
            sample = Reading(meta["s"], t_ns, value, meta["q"], meta["u"], meta["hz"])
        yield Recorded(meta["d"], rx_ns, sample)


# -- replaying ---------------------------------------------------------------------------------------------------


def replay_deployment(recording: Recording, config: Path | None, workdir: Path) -> tuple[Deployment, Path]:
    """The pipelines to replay through, with no devices and no sinks: those of `config` (validated like `run`
    validates it), or else those recorded, with their calibration files restored under `workdir`. Inputs never
    drop in a replay (`when_full: block`): at maximal speed a drop would depend on timing. Returns the deployment
    and the directory its calibration paths are relative to."""
    from edge_runtime.config import load_deployment

    if config is not None:
        base = load_deployment(config)
        pipelines = [
            p.model_copy(update={"outputs": [], "batching": p.batching.model_copy(update={"when_full": "block"})})
            for p in base.pipelines
        ]
        service = {"max_streams": base.service.max_streams, "inference_workers": base.service.inference_workers}
        config_dir = config.parent
        data_pipelines: list[Any] = [p.model_dump(mode="json") for p in pipelines]
    else:
        stored = recording.header.get("replay") or {}
        service = dict(stored.get("service") or {})
        data_pipelines = []
        for p in stored.get("pipelines") or []:
            p = dict(p)
            p["batching"] = {**(p.get("batching") or {}), "when_full": "block"}
            data_pipelines.append(p)
        for rel, text in (recording.header.get("calibrations") or {}).items():
            target = workdir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        config_dir = workdir
    deployment = Deployment.model_validate(
        {
            "service": {
                **service,
                "metrics_listen": None,
                "ui_listen": None,
                "model_watch_s": 0,  # the models of a replay do not change under it
                "outbox": {"path": str(workdir / "outbox.sqlite")},
            },
            "devices": [],
            "pipelines": data_pipelines,
            "sinks": [],
        },
        context={"cross_checks": "deferred"},  # no devices: the inputs are the recording's streams
    )
    return deployment, config_dir


Speed = float | Literal["recorded", "max"]


def parse_speed(text: str) -> Speed:
    if text in ("recorded", "max"):
        return text  # type: ignore[return-value]
    try:
        factor = float(text)
    except ValueError:
        raise ValueError(f"--speed: 'recorded', 'max' or a factor such as 2, not {text!r}") from None
    if not factor > 0 or factor == float("inf"):
        raise ValueError(f"--speed: a factor must be positive, not {text!r}")
    return factor


async def replay(
    path: Path,
    *,
    config: Path | None = None,
    speed: Speed = "max",
    on_result: Callable[[Result], None] | None = None,
) -> dict[str, Any]:
    """Feed a recording through the pipelines (see `replay_deployment`) at the recorded pace (`recorded`, or a
    factor of it) or as fast as the pipelines take it (`max`); every result goes to `on_result`. Returns a
    summary: samples fed, results and decisions per pipeline, wall and CPU seconds."""
    from edge_runtime.service import Service

    recording = Recording(path)
    results: Counter[str] = Counter()
    decisions: dict[str, Counter[str]] = {}

    def observe(result: Result) -> None:
        results[result.pipeline] += 1
        decisions.setdefault(result.pipeline, Counter())[result.decision] += 1
        if on_result is not None:
            on_result(result)

    with tempfile.TemporaryDirectory(prefix="edge-runtime-replay-") as tmp:
        deployment, config_dir = replay_deployment(recording, config, Path(tmp))
        service = Service(deployment, base_dir=Path(tmp), config_dir=config_dir)
        service.load()
        service.result_observers.append(observe)
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        started = asyncio.create_task(service.started.wait())
        await asyncio.wait([runner, started], return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            await runner  # start-up failed: raise its error
        loop = asyncio.get_running_loop()
        factor = 1.0 if speed == "recorded" else (None if speed == "max" else float(speed))
        t0_wall = time.perf_counter()
        t0_cpu = time.process_time()
        fed = 0
        first_rx: int | None = None
        try:
            for rec in recording:
                if factor is not None:
                    if first_rx is None:
                        first_rx, start = rec.rx_ns, loop.time()
                    due = start + (rec.rx_ns - first_rx) / 1e9 / factor
                    if due > loop.time():
                        await asyncio.sleep(due - loop.time())
                await service.feed(rec.sample)
                fed += 1
            while not service.drained():
                if runner.done():
                    break
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    return {
        "recording": str(path),
        "config": str(config) if config else recording.header.get("config", {}).get("path"),
        "speed": speed,
        "samples": fed,
        "truncated": recording.truncated,
        "results": dict(results),
        "decisions": {p: dict(c) for p, c in decisions.items()},
        "batches": {p.id: p.stats["batches"] for p in service.pipelines},
        "wall_s": round(time.perf_counter() - t0_wall, 3),
        "cpu_s": round(time.process_time() - t0_cpu, 3),
        "models": sorted({p.model_ident for p in service.pipelines}),
    }


# -- comparing ---------------------------------------------------------------------------------------------------

# What does not depend on when a result was made: seq counts per outbox, latency is wall time.
_VOLATILE = ("seq", "latency_ns", "model")


def deterministic(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result's wire form without what depends on the run (`seq`, `latency_ns`) or on the model's name."""
    return {k: v for k, v in jsonable(dict(result)).items() if k not in _VOLATILE}


def _new_row() -> dict[str, Any]:
    return {"only_a": 0, "only_b": 0, "matched": 0, "same_decision": 0, "same_label": 0, "equal": 0,
            "score_abs_diff_sum": 0.0, "decisions": Counter()}  # fmt: skip


def compare_results(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Two result sets of the same recording (e.g. two model versions), matched by (pipeline, stream, t_ns):
    per pipeline how many match, decision and label agreement, the decision confusion (A -> B) and the mean
    absolute score difference; `identical` when every matched result is equal but for seq, latency and model."""

    def key(r: Mapping[str, Any]) -> tuple[str, str, int]:
        return (str(r.get("pipeline")), str(r.get("stream")), int(r.get("t_ns", 0)))

    index_b = {key(r): r for r in b}
    out: dict[str, Any] = {"identical": True, "pipelines": {}}
    seen: set[tuple[str, str, int]] = set()
    for ra in a:
        k = key(ra)
        p = out["pipelines"].setdefault(k[0], _new_row())
        rb = index_b.get(k)
        if rb is None:
            p["only_a"] += 1
            out["identical"] = False
            continue
        seen.add(k)
        p["matched"] += 1
        p["same_decision"] += ra.get("decision") == rb.get("decision")
        p["same_label"] += ra.get("label") == rb.get("label")
        p["decisions"][f"{ra.get('decision')}->{rb.get('decision')}"] += 1
        sa, sb = ra.get("score"), rb.get("score")
        if isinstance(sa, int | float) and isinstance(sb, int | float):
            p["score_abs_diff_sum"] += abs(float(sa) - float(sb))
        if deterministic(ra) == deterministic(rb):
            p["equal"] += 1
        else:
            out["identical"] = False
    for rb in b:
        k = key(rb)
        if k not in seen:
            out["pipelines"].setdefault(k[0], _new_row())["only_b"] += 1
            out["identical"] = False
    for p in out["pipelines"].values():
        n = p["matched"]
        p["decision_agreement"] = round(p["same_decision"] / n, 4) if n else None
        p["label_agreement"] = round(p["same_label"] / n, 4) if n else None
        p["score_mean_abs_diff"] = round(p.pop("score_abs_diff_sum") / n, 6) if n else None
        p["decisions"] = dict(p["decisions"])
    return out
