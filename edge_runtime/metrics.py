"""Prometheus text exposition of the service's counters, served on `service.metrics_listen`.

Counters are the components' own `Stats`; nothing is sampled on the hot path to produce them. A tiny HTTP
responder is enough for one scrape endpoint, so no client library is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_runtime.service import Service

__all__ = ["MetricsServer", "render"]

_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _name(text: str) -> str:
    return _BAD.sub("_", text)


def _label(value: str) -> str:
    """A label value in the exposition format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(service: Service) -> str:
    lines: list[str] = []
    typed: set[str] = set()

    def sample(kind: str, metric: str, labels: dict[str, str], value: float) -> None:
        name = f"edge_runtime_{_name(metric)}"
        if name not in typed:
            typed.add(name)
            lines.append(f"# TYPE {name} {kind}")
        body = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{body}}} {value:g}")

    def counter(metric: str, labels: dict[str, str], value: float) -> None:
        sample("counter", metric, labels, value)

    def gauge(metric: str, labels: dict[str, str], value: float) -> None:
        sample("gauge", metric, labels, value)

    for p in service.pipelines:
        for key, value in p.stats.items():
            counter(f"pipeline_{key}_total", {"pipeline": p.id}, value)
        gauge("pipeline_queue_length", {"pipeline": p.id}, len(p.queue))
        if p.latencies_ns:
            lat = np.fromiter(p.latencies_ns, dtype=np.int64)
            for q in (0.5, 0.99):
                gauge("pipeline_latency_seconds", {"pipeline": p.id, "quantile": str(q)}, np.quantile(lat, q) / 1e9)
    for s in service.sources:
        for key, value in s.stats.items():
            counter(f"source_{key}_total", {"source": s.name}, value)
    for name, sink in service.sinks.items():
        for key, value in sink.stats.items():
            counter(f"sink_{key}_total", {"sink": name}, value)
    for stream, reading in sorted(service.latest.items()):
        labels = {"stream": stream, "unit": reading.unit, "quality": reading.quality}
        try:
            gauge("reading", labels, float(reading.value))
        except (TypeError, ValueError):  # strings and other non-numeric tags have no gauge
            continue
    gauge("outbox_pending_rows", {}, service.outbox.pending_rows)
    counter("outbox_dropped_rows_total", {}, service.outbox.dropped)
    for key, value in service.stats.items():
        counter(f"{key}_total", {}, value)
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, listen: str, service: Service) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.service = service
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            body = render(self.service).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
