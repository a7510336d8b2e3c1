"""What the operator page shows: a live view fed by the service's observer hooks, rendered into one snapshot.

The hooks run on the event loop for every sample and result, so they only keep references (the last frames,
the last waveform blocks, a thinned history per tag) in bounded deques: no copy, no encoding, no maths. The
work (latency quantiles, spectra, downscaled JPEGs) happens in `render`, which the page's publisher calls a few
times per second and only while someone is watching. `gather` runs on the loop and copies what `render` needs,
so `render` can run in a thread while the hooks keep appending.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import itertools
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from adapters.base import Frame, Reading, Result, Sample, jsonable, stream_names
from edge_runtime.dsp import source_window_length
from edge_runtime.streams import StreamMap

if TYPE_CHECKING:
    from edge_runtime.service import Service

__all__ = ["LiveView", "downscale_jpeg", "spectrum_db"]

log = logging.getLogger("edge_runtime.web")

FRAMES_KEPT = 16  # per camera stream at most; frames older than a stream's latest result are let go at once
BLOCKS_KEPT = 64  # per waveform stream: enough blocks to cover one model window at any block size in use
HISTORY_POINTS = 120  # per tag, for its sparkline
HISTORY_EVERY_NS = 500_000_000  # at most two sparkline points per second per tag
ANOMALY_SPAN_NS = 300 * 1_000_000_000  # anomaly score shown over the last five minutes
ANOMALY_EVERY_NS = 500_000_000  # one point per half second, holding the highest score of that half second
ANOMALY_POINTS = ANOMALY_SPAN_NS // ANOMALY_EVERY_NS
STRIP = 24  # recent weld decisions
RATE_SPAN_S = 5.0  # inputs/s and results/s are averaged over this many seconds
FRAME_WIDTH = 480  # px of the JPEG sent to the page
SPECTRUM_BINS = 256
_ERRORS = re.compile(r"error|fail|malformed|invalid|overrun|(?:^|_)late_|drop|reconnect|timeout|lost|rejected")
FRESH_S = 10.0  # a device with a sample in the last FRESH_S seconds is shown as receiving


def spectrum_db(samples: npt.NDArray[Any], rate_hz: float, bins: int = SPECTRUM_BINS) -> tuple[list[float], float]:
    """Magnitude spectrum of one window (Hann, mean removed) in dB, max-pooled to `bins` bands so a peak
    survives the reduction; returns the bands and the top frequency (Nyquist)."""
    x = np.asarray(samples, dtype=np.float64)
    x = (x - x.mean()) * np.hanning(x.size)
    mag = np.abs(np.fft.rfft(x)) / max(x.size, 1)
    n = (mag.size // bins) * bins
    pooled = mag[:n].reshape(bins, -1).max(axis=1) if n else mag
    db = 20 * np.log10(np.maximum(pooled, 1e-9))
    return [round(float(v), 1) for v in db], rate_hz / 2


def downscale_jpeg(image: npt.NDArray[np.uint8], width: int = FRAME_WIDTH, quality: int = 75) -> str:
    """The frame as a data URL, no wider than `width`; overlays use the original pixel coordinates."""
    import cv2

    h, w = image.shape[:2]
    small: npt.NDArray[Any] = image
    if w > width:
        small = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


@dataclass
class _RiceTotals:
    grains: collections.Counter[str] = field(default_factory=collections.Counter)
    ejected: collections.Counter[str] = field(default_factory=collections.Counter)
    frames: int = 0


class LiveView:
    """The page's view of a running service: `on_samples`/`on_result` are the observer hooks."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.task_of = {p.id: p.task.kind for p in service.deployment.pipelines}
        self.declared = {
            p.id: str(getattr(p.task, "declared_variety", "")) for p in service.deployment.pipelines
        }  # rice purity is the share of the declared variety
        # per stream, bounded like the service's own maps: a publisher inventing topics cannot grow the page
        per_stream = functools.partial(
            StreamMap, service.deployment.service.max_streams, service.stats, "ui_streams_evicted"
        )
        self.frames: StreamMap[str, collections.deque[Frame]] = per_stream()
        self.blocks: StreamMap[str, collections.deque[Reading]] = per_stream()
        self.seen_ns: StreamMap[str, int] = per_stream()  # stream -> wall clock when its last sample arrived
        # first stream of a group of scalars -> when its sparklines take points again (`on_samples`)
        self._quiet_until: StreamMap[str, int] = per_stream()
        self.history: StreamMap[str, collections.deque[tuple[int, float]]] = per_stream()
        # (pipeline, stream) key for waveforms, pipeline for frames
        self.latest: StreamMap[str, Result] = per_stream()
        self.shown: dict[str, Frame] = {}  # pipeline -> the frame of its latest result
        self.results: collections.Counter[str] = collections.Counter()
        self.rice: dict[str, _RiceTotals] = collections.defaultdict(_RiceTotals)
        self.strip: dict[str, collections.deque[Result]] = {}
        self.anomaly: StreamMap[str, collections.deque[tuple[int, float]]] = per_stream()
        self._rates: dict[str, collections.deque[tuple[float, int, int]]] = {}
        self._jpeg: dict[str, tuple[int, str]] = {}  # pipeline -> (seq, data URL): encode each result once
        self.errors = 0

    # ---- observer hooks (event loop, hot path: references only) ---------------------------------------------
    def on_sample(self, sample: Sample) -> None:
        self.on_samples((sample,))

    def on_samples(self, samples: Sequence[Sample]) -> None:
        """Sample hook; the service calls it on the routing path without a guard, so it never raises.

        A group of scalars (a Modbus response, or one MQTT value) that got its sparkline points less than half a
        second ago only refreshes its "seen" times: at a 10 ms poll that is 49 groups in 50, and the page's cost
        per tag was a tenth of the ingest's CPU.
        """
        if not samples:
            return
        now = time.time_ns()
        first = samples[0]
        try:
            self.seen_ns.update(zip(stream_names(samples), itertools.repeat(now)))
            if now < (self._quiet_until.get(first.stream) or 0):
                return
        except Exception as exc:  # a display must never stop the line
            self._failed(first, exc)
            return
        scalars = True
        for sample in samples:
            try:
                scalars = scalars and isinstance(sample, Reading) and sample.value.ndim == 0
                self._on_sample(sample, now)
            except Exception as exc:
                scalars = False
                self._failed(sample, exc)
        if scalars:
            self._quiet_until[first.stream] = now + HISTORY_EVERY_NS

    def _failed(self, sample: Sample, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1:
            log.warning("event=ui_sample_hook_failed stream=%s error=%r", getattr(sample, "stream", "?"), exc)

    def _on_sample(self, sample: Sample, now: int) -> None:
        stream = sample.stream
        if isinstance(sample, Frame):
            frames = self.frames.get(stream)
            if frames is None:
                frames = self.frames[stream] = collections.deque(maxlen=FRAMES_KEPT)
            frames.append(sample)
        elif sample.value.ndim == 1:
            blocks = self.blocks.get(stream)
            if blocks is None:
                blocks = self.blocks[stream] = collections.deque(maxlen=BLOCKS_KEPT)
            blocks.append(sample)
        else:
            hist = self.history.get(stream)
            if hist is None:
                hist = self.history[stream] = collections.deque(maxlen=HISTORY_POINTS)
            if (not hist or now - hist[-1][0] >= HISTORY_EVERY_NS) and sample.quality != "bad":
                with contextlib.suppress(TypeError, ValueError):  # strings have no sparkline
                    hist.append((now, float(sample.value)))

    def on_result(self, result: Result) -> None:
        pipeline = result.pipeline
        self.results[pipeline] += 1
        task = self.task_of.get(pipeline)
        if task == "vibration_anomaly":
            self.latest[f"{pipeline}\0{result.stream}"] = result
            score = result.values.get("anomaly_score")
            if isinstance(score, int | float):
                hist = self.anomaly.get(result.stream)
                if hist is None:
                    hist = self.anomaly[result.stream] = collections.deque(maxlen=ANOMALY_POINTS)
                if hist and result.t_ns - hist[-1][0] < ANOMALY_EVERY_NS:
                    if score > hist[-1][1]:  # a spike within the half second is what the operator must see
                        hist[-1] = (hist[-1][0], float(score))
                else:
                    hist.append((result.t_ns, float(score)))
            return
        self.latest[pipeline] = result
        frames = self.frames.get(result.stream)
        # keep the result's own frame; the ones before it will never be shown (with two frame pipelines on one
        # camera, the slower one may then find its frame gone and show its figures without it)
        if frames:
            while frames and frames[0].t_ns <= result.t_ns:
                frame = frames.popleft()
                if frame.t_ns == result.t_ns:
                    self.shown[pipeline] = frame
        if task == "rice_sorter":
            totals = self.rice[pipeline]
            totals.frames += 1
            for g in result.detail.get("grains", ()):
                totals.grains[g["variety"]] += 1
                totals.ejected[g["variety"]] += int(bool(g["eject"]))
        elif task == "weld_inspector":
            strip = self.strip.get(pipeline)
            if strip is None:
                strip = self.strip[pipeline] = collections.deque(maxlen=STRIP)
            strip.append(result)

    # ---- snapshot -------------------------------------------------------------------------------------------
    def gather(self, backlog: Mapping[str, tuple[int, int | None]]) -> dict[str, Any]:
        """Copy, on the event loop, what `render` needs: counters, deque contents, references to arrays."""
        svc = self.service
        now = time.monotonic()
        pipelines = []
        for p in svc.pipelines:
            rates = self._rates.setdefault(p.id, collections.deque())
            rates.append((now, p.stats["inputs"], self.results[p.id]))
            while len(rates) > 2 and now - rates[1][0] >= RATE_SPAN_S:
                rates.popleft()
            pipelines.append(
                {
                    "id": p.id,
                    "task": self.task_of.get(p.id, ""),
                    "stats": dict(p.stats),
                    "queue": len(p.queue),
                    "queue_max": p.queue.maxsize,
                    "latencies_ns": list(p.latencies_ns)[-2000:],
                    "rates": list(rates),
                    "window": (p.window, p.rate_hz),
                    "threshold": getattr(p.task, "threshold", None),
                }
            )
        blocks = {k: list(v) for k, v in self.blocks.items()}
        return {
            "wall_ns": time.time_ns(),
            "name": svc.deployment.service.name,
            "devices": [  # sources are built in the deployment's order, once the service has loaded
                (d.id, d.kind, d.stream_prefixes(), dict(svc.sources[i].stats) if i < len(svc.sources) else {})
                for i, d in enumerate(svc.deployment.devices)
            ],
            "seen": dict(self.seen_ns.items()),
            "pipelines": pipelines,
            "sinks": [(s.id, s.kind, dict(svc.sinks[s.id].stats)) for s in svc.deployment.sinks if s.id in svc.sinks],
            "backlog": dict(backlog),
            "outbox": {
                "pending": svc.outbox.pending_rows,
                "max_rows": svc.outbox.max_rows,
                "dropped": svc.outbox.dropped,
                "when_full": svc.outbox.when_full,
            },
            "latest": dict(self.latest.items()),
            "rice": {k: (dict(v.grains), dict(v.ejected), v.frames) for k, v in self.rice.items()},
            "strip": {k: list(v) for k, v in self.strip.items()},
            "anomaly": {k: list(v) for k, v in self.anomaly.items()},
            "shown": dict(self.shown),
            "blocks": blocks,
            "readings": dict(svc.latest.items()),
            "history": {k: list(v) for k, v in self.history.items()},
        }

    def render(self, g: dict[str, Any]) -> dict[str, Any]:
        """The page's JSON from a `gather`ed copy; safe in a worker thread."""
        wall = g["wall_ns"]
        out: dict[str, Any] = {"service": g["name"], "t_ns": wall}
        out["devices"] = [
            self._device(ident, kind, prefixes, stats, g["seen"], wall) for ident, kind, prefixes, stats in g["devices"]
        ]
        out["pipelines"] = [self._pipeline(p) for p in g["pipelines"]]
        out["sinks"] = [
            {
                "id": ident,
                "kind": kind,
                "pending": g["backlog"].get(ident, (0, None))[0],
                "oldest_s": _age_s(wall, g["backlog"].get(ident, (0, None))[1]),
                "acknowledged": stats.get("acknowledged", 0),
                "failures": stats.get("delivery_failures", 0) + stats.get("open_failures", 0),
            }
            for ident, kind, stats in g["sinks"]
        ]
        out["outbox"] = g["outbox"]
        out["rice"], out["weld"], out["vibration"] = [], [], []
        windows = {p["id"]: p for p in g["pipelines"]}
        for key, result in sorted(g["latest"].items()):
            task = self.task_of.get(result.pipeline)
            if task == "rice_sorter":
                out["rice"].append(self._rice(result, g))
            elif task == "weld_inspector":
                out["weld"].append(self._weld(result, g))
            elif task == "vibration_anomaly":
                out["vibration"].append(self._vibration(key, result, g, windows.get(result.pipeline)))
        out["machines"] = [
            {
                "stream": stream,
                "value": jsonable(reading.value.item()),
                "unit": reading.unit,
                "quality": reading.quality,
                "age_s": _age_s(wall, reading.t_ns),
                "spark": [round(v, 4) for _, v in g["history"].get(stream, ())],
            }
            for stream, reading in sorted(g["readings"].items())
        ]
        return jsonable(out)  # type: ignore[no-any-return]

    def _device(
        self, ident: str, kind: str, prefixes: list[str], stats: dict[str, int], seen: dict[str, int], wall: int
    ) -> dict[str, Any]:
        import fnmatch

        last = max(
            (t for stream, t in seen.items() if any(fnmatch.fnmatchcase(stream.split(".", 1)[0], p) for p in prefixes)),
            default=None,
        )
        age = _age_s(wall, last)
        state = "waiting" if age is None else ("receiving" if age < FRESH_S else "silent")
        errors = {k: v for k, v in stats.items() if _ERRORS.search(k)}
        return {"id": ident, "kind": kind, "state": state, "age_s": age, "errors": errors}

    @staticmethod
    def _pipeline(p: dict[str, Any]) -> dict[str, Any]:
        lat = np.asarray(p["latencies_ns"], dtype=np.float64)
        (t0, in0, out0), (t1, in1, out1) = p["rates"][0], p["rates"][-1]
        span = t1 - t0
        stats = p["stats"]
        return {
            "id": p["id"],
            "task": p["task"],
            "inputs_per_s": (in1 - in0) / span if span > 0 else None,
            "results_per_s": (out1 - out0) / span if span > 0 else None,
            "queue": p["queue"],
            "queue_max": p["queue_max"],
            "p50_ms": float(np.quantile(lat, 0.5)) / 1e6 if lat.size else None,
            "p99_ms": float(np.quantile(lat, 0.99)) / 1e6 if lat.size else None,
            "drops": stats.get("input_dropped", 0) + stats.get("results_lost", 0),
            "errors": stats.get("batch_errors", 0),
            "inputs": stats.get("inputs", 0),
        }

    def _frame(self, result: Result, g: dict[str, Any]) -> tuple[str, int, int]:
        """The result's own frame (matched on t_ns) as a downscaled JPEG, encoded once per result."""
        frame = g["shown"].get(result.pipeline)
        if frame is None or frame.t_ns != result.t_ns or frame.stream != result.stream:
            return "", 0, 0
        h, w = frame.image.shape[:2]
        cached = self._jpeg.get(result.pipeline)
        if cached is None or cached[0] != result.seq:
            cached = self._jpeg[result.pipeline] = (result.seq, downscale_jpeg(frame.image))
        return cached[1], int(w), int(h)

    def _rice(self, result: Result, g: dict[str, Any]) -> dict[str, Any]:
        jpeg, w, h = self._frame(result, g)
        grains, ejected, frames = g["rice"].get(result.pipeline, ({}, {}, 0))
        total = sum(grains.values())
        declared = self.declared.get(result.pipeline, "")
        return {
            "pipeline": result.pipeline,
            "seq": result.seq,
            "stream": result.stream,
            "decision": result.decision,
            "frame": jpeg,
            "width": w,
            "height": h,
            "grains": [
                {k: gr[k] for k in ("x", "y", "w", "h", "variety", "eject", "broken")}
                for gr in result.detail.get("grains", ())
            ],
            "declared": declared,
            "purity": grains.get(declared, 0) / total if total else None,
            "frames": frames,
            "varieties": [{"variety": v, "grains": n, "ejected": ejected.get(v, 0)} for v, n in sorted(grains.items())],
            "lens_transmission": result.values.get("lens_transmission"),
            "lens_fog": result.values.get("lens_fog"),
            "quality": result.quality,
        }

    def _weld(self, result: Result, g: dict[str, Any]) -> dict[str, Any]:
        jpeg, w, h = self._frame(result, g)
        return {
            "pipeline": result.pipeline,
            "seq": result.seq,
            "stream": result.stream,
            "frame": jpeg,
            "width": w,
            "height": h,
            "boxes": list(result.detail.get("boxes", ())),
            "decision": result.decision,
            "reasons": list(result.detail.get("reject_reasons", ())),
            "score": result.score,
            "quality": result.quality,
            "strip": [
                {"seq": r.seq, "decision": r.decision, "reasons": list(r.detail.get("reject_reasons", ()))}
                for r in g["strip"].get(result.pipeline, ())
            ],
        }

    def _vibration(
        self, key: str, result: Result, g: dict[str, Any], pipeline: dict[str, Any] | None
    ) -> dict[str, Any]:
        wall = g["wall_ns"]
        out: dict[str, Any] = {
            "pipeline": result.pipeline,
            "stream": result.stream,
            "seq": result.seq,
            "label": result.label,
            "probability": result.score,
            "decision": result.decision,
            "anomaly_score": result.values.get("anomaly_score"),
            # the result's own threshold first: a cold-start layer raises it while the machine warms up
            "threshold": result.values.get("anomaly_threshold", pipeline["threshold"] if pipeline else None),
            "velocity_rms_mm_s": result.values.get("velocity_rms_mm_s"),
            "zone": result.values.get("severity_zone"),
            "quality": result.quality,
            "anomaly_history": [
                [round((t - wall) / 1e9, 1), round(s, 4)]
                for t, s in g["anomaly"].get(result.stream, ())
                if wall - t <= ANOMALY_SPAN_NS
            ],
            "spectrum": None,
            "max_hz": None,
        }
        blocks: list[Reading] = g["blocks"].get(result.stream, [])
        if blocks and blocks[-1].rate_hz:
            rate = float(blocks[-1].rate_hz)
            window, model_rate = pipeline["window"] if pipeline else (0, 0.0)
            n = source_window_length(window, model_rate, rate) if window and model_rate else int(rate)
            tail = np.concatenate([b.value for b in blocks if b.rate_hz == rate])[-n:]
            if tail.size >= 64:
                out["spectrum"], out["max_hz"] = spectrum_db(tail, rate)
        return out


def _age_s(wall_ns: int, t_ns: int | None) -> float | None:
    return None if t_ns is None else round(max(0.0, (wall_ns - t_ns) / 1e9), 1)
