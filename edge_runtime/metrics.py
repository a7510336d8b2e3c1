"""`/metrics` (Prometheus) and `/healthz` on `service.metrics_listen`, as plain functions of the service.

`render_off_loop(service)` (a coroutine; `render` is the same for plain code) and `health(service)` are what the
HTTP responder serves; any other page (an operator UI) may call them too. Metrics go through `prometheus_client`
(per scrape, plus one registry per service for the process metrics: two services in one process, as in tests,
never mix), so names, HELP/TYPE lines and label escaping follow the exposition format, and a hostile unit or topic
cannot forge lines. Counters are the components' own `Stats`, copied at scrape time on the event loop (`gather`)
and formatted in a worker thread (`exposition`); nothing is sampled on the hot path for them. Latency is a
histogram (cumulative buckets add up across gateways, unlike quantiles); process metrics (RSS, CPU, open files)
and `edge_runtime_build_info` come with it.

Health (the same rule drives the systemd watchdog): a pipeline makes progress when it has no input waiting, or
when it finished a batch (results stored in the outbox) within `service.progress_timeout_s` of its inputs
arriving. A hung inference thread or a stuck outbox makes `/healthz` answer 503 with the reason. A device that
sends nothing is not a fault of the runtime (a stopped line is quiet); its source's counters show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.base import Reading
from adapters.supervise import Backoff
from edge_runtime.pipeline import LATENCY_BUCKETS_S

if TYPE_CHECKING:
    from edge_runtime.service import Service

__all__ = [
    "CONTENT_TYPE",
    "Health",
    "MetricsServer",
    "Scrape",
    "exposition",
    "gather",
    "health",
    "make_registry",
    "render",
    "render_off_loop",
]

log = logging.getLogger("edge_runtime.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_P = "edge_runtime"


@functools.cache  # importlib's lookup scans the installed distributions: ~1 ms of each scrape's 4
def _package_version() -> str:
    try:
        return version("edge-runtime")
    except PackageNotFoundError:
        return "unknown"


def _name(text: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in text)


@dataclass(frozen=True, slots=True)
class _Pipeline:
    id: str
    queue: int
    stalled_s: float
    latency_cumulative: npt.NDArray[np.int64]  # per LATENCY_BUCKETS_S bucket, then +Inf
    latency_sum_s: float
    layer_gauges: list[tuple[str, dict[str, str], float]]  # metric, labels, level


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one scrape reports, gathered on the event loop in copies, so the text can be formatted in a worker
    thread: formatting is most of a scrape (3.5 ms at 500 tags, 31 ms at 5,000 on the reference machine), and on
    the loop it would delay every poll and frame by as much."""

    counters: list[tuple[str, str, str, float]]  # metric, label name ("" for none), label value, value
    pipelines: list[_Pipeline]
    latest: list[tuple[str, Reading]]
    pending_rows: int
    healthy: bool


def gather(service: Service) -> Scrape:
    """The service's counters, queues and latest readings, copied (on the event loop). Each dict is copied by one
    `list(d.items())`, which no other thread can interrupt: inference workers, a camera's capture thread and
    paho's network thread count into some of these `Stats` too."""
    svc = service
    counters: list[tuple[str, str, str, float]] = []
    for p in svc.pipelines:
        counters += [(f"pipeline_{k}", "pipeline", p.id, v) for k, v in list(p.stats.items())]
        # the task's own counts: malformed inputs it refused, rice grains judged without the size prior, ...
        task_stats = list(getattr(p.task, "stats", {}).items())
        counters += [(f"pipeline_task_{k}", "pipeline", p.id, v) for k, v in task_stats]
    for s in svc.sources:
        counters += [(f"source_{k}", "source", s.name, v) for k, v in list(s.stats.items())]
    for name, sink in list(svc.sinks.items()):
        counters += [(f"sink_{k}", "sink", name, v) for k, v in list(sink.stats.items())]
    counters += [(k, "", "", v) for k, v in list(svc.stats.items())]
    counters.append(("outbox_dropped_rows", "", "", svc.outbox.dropped))
    now = time.monotonic()
    pipelines = [
        _Pipeline(
            p.id,
            len(p.queue),
            p.stalled_s(now),
            p.latency_counts.cumsum(),
            p.latency_sum_s,
            [(metric, dict(labels), level) for metric, labels, level in p.compensator.gauges()],
        )
        for p in svc.pipelines
    ]
    return Scrape(counters, pipelines, list(svc.latest.items()), svc.outbox.pending_rows, health(svc).ok)


_COUNTER_DOCS = {"outbox_dropped_rows": "Outbox rows dropped when full (drop_oldest)."}


class _ScrapeCollector(Collector):
    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        counters: dict[str, CounterMetricFamily] = {}
        for metric, label, labelled, value in sorted(self.scrape.counters):
            name = f"{_P}_{_name(metric)}"
            fam = counters.get(name)
            if fam is None:
                doc = _COUNTER_DOCS.get(metric) or (f"Count of {metric}." if label else f"Count of {metric} (service).")
                fam = counters[name] = CounterMetricFamily(name, doc, labels=[label] if label else [])
            fam.add_metric([labelled] if label else [], value)
        yield from counters.values()

        queue = GaugeMetricFamily(f"{_P}_pipeline_queue_length", "Inputs waiting in the pipeline.", labels=["pipeline"])
        stalled = GaugeMetricFamily(
            f"{_P}_pipeline_stalled_seconds", "How long inputs have waited with no batch finished.", labels=["pipeline"]
        )
        latency = HistogramMetricFamily(
            f"{_P}_pipeline_latency_seconds", "Input arrival to result stored.", labels=["pipeline"]
        )
        for p in self.scrape.pipelines:
            queue.add_metric([p.id], p.queue)
            stalled.add_metric([p.id], p.stalled_s)
            cumulative = p.latency_cumulative
            buckets = [(f"{b:g}", float(c)) for b, c in zip(LATENCY_BUCKETS_S, cumulative[:-1], strict=True)]
            buckets.append(("+Inf", float(cumulative[-1])))
            latency.add_metric([p.id], buckets, p.latency_sum_s)
        yield from (queue, stalled, latency)

        layer_gauges: dict[str, GaugeMetricFamily] = {}  # compensation layers' own gauges (lens health)
        for p in self.scrape.pipelines:
            for metric, labels, level in p.layer_gauges:
                keys = ["pipeline", *sorted(labels)]
                name = f"{_P}_{_name(metric)}"
                gauge = layer_gauges.get(name)
                if gauge is None:
                    gauge = layer_gauges[name] = GaugeMetricFamily(name, f"{metric} (compensation layer).", labels=keys)
                gauge.add_metric([p.id, *(labels[k] for k in sorted(labels))], level)
        yield from layer_gauges.values()

        reading = GaugeMetricFamily(
            f"{_P}_reading", "Latest scalar value per stream.", labels=["stream", "unit", "quality"]
        )
        for stream, r in sorted(self.scrape.latest, key=lambda item: item[0]):
            try:
                scalar = float(r.value)
            except (TypeError, ValueError):  # strings and other non-numeric tags have no gauge
                continue
            reading.add_metric([stream, r.unit, r.quality], scalar)
        yield reading
        pending = self.scrape.pending_rows
        yield GaugeMetricFamily(f"{_P}_outbox_pending_rows", "Rows waiting for a sink.", value=pending)
        ok = 1.0 if self.scrape.healthy else 0.0
        yield GaugeMetricFamily(f"{_P}_healthy", "1 when every pipeline makes progress.", value=ok)
        build = GaugeMetricFamily(f"{_P}_build_info", "Version of the runtime.", labels=["version", "python"])
        build.add_metric([_package_version(), platform.python_version()], 1.0)
        yield build


def make_registry(service: Service) -> CollectorRegistry:
    """The process and platform metrics (RSS, CPU, open files: read from /proc, safe in any thread); the service's
    own come from a `Scrape` gathered at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def exposition(scrape: Scrape, registry: CollectorRegistry) -> bytes:
    """The Prometheus text of a gathered scrape followed by `registry`'s metrics (in any thread)."""
    own = CollectorRegistry(auto_describe=False)
    own.register(_ScrapeCollector(scrape))
    return generate_latest(own) + generate_latest(registry)


def render(service: Service) -> str:
    """The Prometheus text exposition of the service, formatted in the calling thread."""
    return exposition(gather(service), service.registry).decode()


async def render_off_loop(service: Service) -> bytes:
    """`render` for a coroutine: gathered on the event loop, formatted in a worker thread."""
    return await asyncio.to_thread(exposition, gather(service), service.registry)


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    reason: str  # one line: "ok: ..." or what is stuck


def health(service: Service, now: float | None = None) -> Health:
    """Whether every pipeline makes progress (module docstring), with a one-line summary or the reason."""
    now = time.monotonic() if now is None else now
    limit = service.deployment.service.progress_timeout_s
    stuck = [
        f"pipeline {p.id}: {len(p.queue) + p.in_flight} inputs waiting {p.stalled_s(now):.0f} s with no result "
        f"stored (limit {limit:g} s)"
        for p in service.pipelines
        if p.stalled_s(now) > limit
    ]
    if stuck:
        return Health(False, "stalled: " + "; ".join(stuck))
    results = sum(p.stats["inputs"] for p in service.pipelines)
    return Health(
        True,
        f"ok: {len(service.pipelines)} pipelines, {results} results, {service.outbox.pending_rows} rows pending",
    )


class MetricsServer:
    """A minimal HTTP/1.1 responder for `/metrics` and `/healthz` on the event loop (one request per
    connection). A port that is busy at start-up is retried in the background; the service runs meanwhile."""

    def __init__(self, listen: str, service: Service) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.service = service
        self.bound = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.bound.set()

    async def serve(self, backoff: Backoff | None = None) -> None:
        """Bind, retrying with back-off (up to a minute apart) while the port is taken; then serve for ever."""
        backoff = backoff or Backoff(initial_s=1.0, max_s=60.0)
        failed = False
        while self._server is None:
            try:
                await self.start()
            except OSError as exc:
                if not failed:
                    log.error(
                        "event=metrics_bind_failed listen=%s:%d error=%r action=running_without_metrics "
                        "(retrying in the background)",
                        self.host,
                        self.port,
                        exc,
                    )
                    failed = True
                await asyncio.sleep(backoff.next_delay())
        if failed:
            log.warning("event=metrics_bound listen=%s:%d", self.host, self.port)
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].decode(errors="replace").split("?")[0] if len(parts) >= 2 else "/"
            if path == "/healthz":
                h = health(self.service)
                status, body = ("200 OK" if h.ok else "503 Service Unavailable"), (h.reason + "\n").encode()
                ctype = "text/plain; charset=utf-8"
            elif path in ("/metrics", "/"):
                status, body, ctype = "200 OK", await render_off_loop(self.service), CONTENT_TYPE
            else:
                status, body, ctype = "404 Not Found", b"/metrics or /healthz\n", "text/plain; charset=utf-8"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
