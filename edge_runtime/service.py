"""The service: opens everything a deployment names, refuses a bad model before the first input, and runs.

Topology: each source is supervised (reconnect with back-off); the router hands every sample to the pipelines
whose input patterns match its stream; each pipeline batches into its task; results go through the outbox to each
of the pipeline's sinks. A sink that cannot connect at start-up does not stop the service: its results wait in the
outbox until it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adapters.base import Reading, Result, Sample, Sink, Source, Stats
from adapters.registry import make_sink, make_source
from adapters.supervise import Backoff, OutageLog, close_quietly, supervise
from edge_runtime.compensation import Compensator, build_layers
from edge_runtime.config import Deployment
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.metrics import Health, MetricsServer, health, make_registry
from edge_runtime.outbox import Outbox, deliver_forever
from edge_runtime.pipeline import Pipeline
from edge_runtime.streams import StreamMap
from edge_runtime.tasks import make_task

__all__ = ["Service"]

log = logging.getLogger("edge_runtime.service")

ResultObserver = Callable[[Result], None]

SINK_OPEN_TIMEOUT_S = 30.0  # above every adapter's own connect timeout, so theirs is the one that speaks
SINK_REOPEN_AFTER = 5  # failed delivery attempts in a row before a sink is closed and opened again
SampleObserver = Callable[[Sample], None]


class _Notifier:
    """systemd `Type=notify`: READY=1 once running; WATCHDOG=1 at half the watchdog period, but only while the
    service makes progress (`metrics.health`), with a one-line `STATUS=`. The check runs on the event loop, so a
    blocked loop stops the pets too; a hung inference thread or stuck outbox shows as a stalled pipeline."""

    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET")
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_s = int(usec) / 2e6 if usec and usec.isdigit() else None

    def send(self, message: str) -> None:
        if not self.address:
            return
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), addr)
        except OSError as exc:  # systemd gone or socket unwritable: never a reason to stop inference
            log.warning("event=sd_notify_failed message=%s error=%r", message.split("=")[0], exc)

    async def watchdog(self, check: Callable[[], Health], status_every_s: float = 10.0) -> None:
        if not self.address:
            return
        period = min(self.watchdog_s or status_every_s, status_every_s)
        withheld = False
        while True:
            h = check()
            if h.ok and self.watchdog_s:
                self.send(f"WATCHDOG=1\nSTATUS={h.reason}")
            else:
                self.send(f"STATUS={h.reason}")
            if h.ok == withheld:  # log the change, not every period
                withheld = not h.ok
                if withheld:
                    log.error("event=watchdog_withheld reason=%r (systemd restarts the service)", h.reason)
                else:
                    log.warning("event=watchdog_resumed status=%r", h.reason)
            await asyncio.sleep(period)


class Service:
    def __init__(self, deployment: Deployment, *, base_dir: Path | None = None, config_dir: Path | None = None) -> None:
        self.deployment = deployment
        self.base_dir = base_dir or Path.cwd()
        self.config_dir = config_dir or Path.cwd()  # calibration files are relative to the deployment file
        self.sources: list[Source] = []
        self.sinks: dict[str, Sink] = {}
        self.pipelines: list[Pipeline] = []
        self.stats = Stats()
        self.result_observers: list[ResultObserver] = []
        self.sample_observers: list[SampleObserver] = []
        svc = deployment.service
        # stream -> (pipelines it is an input of, pipelines it is a side input of)
        self._routes: StreamMap[str, tuple[list[Pipeline], list[Pipeline]]] = StreamMap(
            svc.max_streams, self.stats, "routes_evicted"
        )
        # Latest scalar reading per stream: exported as metrics, so tags without a model are still visible.
        self.latest: StreamMap[str, Reading] = StreamMap(svc.max_streams, self.stats, "latest_evicted")
        self._outputs: dict[str, list[str]] = {}
        outbox_path = Path(svc.outbox.path)
        if not outbox_path.is_absolute():
            outbox_path = self.base_dir / outbox_path
        self.outbox = Outbox(outbox_path, max_rows=svc.outbox.max_rows, when_full=svc.outbox.when_full)
        self._executor = ThreadPoolExecutor(max_workers=svc.inference_workers, thread_name_prefix="infer")
        self.started = asyncio.Event()
        self.registry = make_registry(self)  # this service's metrics only (edge_runtime.metrics.render)
        self.metrics: MetricsServer | None = None

    def load(self) -> None:
        """Open models and build components; raises ModelError/AdapterError before anything runs."""
        runners: dict[tuple[str, str, int], ModelRunner] = {}
        for p in self.deployment.pipelines:
            key = (p.model.name, p.model.variant, p.model.intra_op_threads)
            if key not in runners:
                runners[key] = load_model(
                    p.model.name, variant=p.model.variant, intra_op_threads=p.model.intra_op_threads
                )
            runner = runners[key]
            self.pipelines.append(
                Pipeline(
                    p.id,
                    p.inputs,
                    make_task(p.task, runner),
                    runner.ident,
                    runner.manifest.preprocessing,
                    max_batch=p.batching.max_batch,
                    max_wait_ms=p.batching.max_wait_ms,
                    queue_size=p.batching.queue_size,
                    when_full=p.batching.when_full,
                    executor=self._executor,
                    on_result=self._store_results,
                    compensator=Compensator(
                        build_layers(
                            p.compensation, self.config_dir, p.id, waveform="window" in runner.manifest.preprocessing
                        )
                    ),
                    max_streams=self.deployment.service.max_streams,
                )
            )
            self._outputs[p.id] = list(p.outputs)
        self.sources = [make_source(d) for d in self.deployment.devices]
        self.sinks = {s.id: make_sink(s) for s in self.deployment.sinks}

    async def _store_results(self, pipeline: str, batch: list[Result]) -> list[Result]:
        stored = await self.outbox.put_many(pipeline, batch, self._outputs.get(pipeline, []))
        if self.result_observers:
            for result in stored:
                for observer in self.result_observers:
                    try:
                        observer(result)
                    except Exception as exc:  # a display or tap must never stop the line
                        self.stats["observer_errors"] += 1
                        log.debug("event=observer_failed error=%r", exc)
        return stored

    async def _route(self, sample: Sample) -> None:
        self.stats["samples"] += 1
        if isinstance(sample, Reading) and sample.value.ndim == 0:
            self.latest[sample.stream] = sample
        for observer in self.sample_observers:
            observer(sample)
        routes = self._routes.get(sample.stream)
        if routes is None:
            routes = (
                [p for p in self.pipelines if p.matches(sample.stream)],
                [p for p in self.pipelines if p.wants_side_input(sample.stream)],
            )
            self._routes[sample.stream] = routes
        targets, sides = routes
        if sides and isinstance(sample, Reading):
            for pipeline in sides:
                pipeline.side_input(sample)
        for pipeline in targets:
            await pipeline.feed(sample)

    async def _run_sink(self, sink: Sink, max_age_s: float | None) -> None:
        """Open a sink and feed it from the outbox; reopen it when it keeps failing (a restarted PLC, a lost
        client). The outbox holds the results meanwhile."""
        backoff = Backoff(initial_s=0.5, max_s=15.0)
        outage = OutageLog("sink", sink.name)
        while True:
            try:
                await asyncio.wait_for(sink.open(), SINK_OPEN_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                sink.stats["open_failures"] += 1
                outage.failed(exc, " (results wait in the outbox)")
                await close_quietly(sink)
                await asyncio.sleep(backoff.next_delay())
                continue
            sink.stats["opened"] += 1
            outage.ok()
            backoff.reset()
            await deliver_forever(self.outbox, sink, max_age_s=max_age_s, reopen_after=SINK_REOPEN_AFTER)
            sink.stats["reopens"] += 1
            log.warning("event=sink_reopen sink=%s after=%d_failed_attempts", sink.name, SINK_REOPEN_AFTER)
            await close_quietly(sink)
            await asyncio.sleep(backoff.next_delay())

    def connected(self) -> bool:
        """Every source and sink has opened at least once (start-up is over; it may have failed since)."""
        components: list[Source | Sink] = [*self.sources, *self.sinks.values()]
        return all(c.stats["opened"] for c in components)

    def drained(self) -> bool:
        """Every input taken so far has its result stored, and every stored result is delivered."""
        return all(p.idle for p in self.pipelines) and self.outbox.pending_rows == 0

    async def _drain(self, source_tasks: list[asyncio.Task[Any]], timeout_s: float) -> None:
        """Graceful stop: stop the inputs, then give pipelines and sinks up to `timeout_s` to finish what is in
        flight. What does not make it stays in the outbox for the next start (nothing is lost either way)."""
        for task in source_tasks:
            task.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.drained() and loop.time() < deadline:  # noqa: ASYNC110 (a condition over many counters)
            await asyncio.sleep(0.02)
        if not self.drained():
            log.warning(
                "event=stop_before_drained pending_results=%d (delivered after the next start)",
                self.outbox.pending_rows,
            )

    async def run(
        self, stop: asyncio.Event | None = None, *, run_for_s: float | None = None, drain_s: float = 5.0
    ) -> None:
        if not self.pipelines and not self.sources:
            self.load()
        await self.outbox.open(sinks=list(self.sinks))
        notifier = _Notifier()
        metrics: MetricsServer | None = None
        try:
            if self.deployment.service.metrics_listen:
                metrics = self.metrics = MetricsServer(self.deployment.service.metrics_listen, self)
            async with asyncio.TaskGroup() as tg:
                tasks: list[asyncio.Task[Any]] = []
                if metrics is not None:  # a busy port is retried in the background, never a reason to exit
                    tasks.append(tg.create_task(metrics.serve(), name="metrics"))
                for sink_config in self.deployment.sinks:
                    sink = self.sinks[sink_config.id]
                    tasks.append(tg.create_task(self._run_sink(sink, sink_config.max_age()), name=f"sink:{sink.name}"))
                for pipeline in self.pipelines:
                    tasks.append(tg.create_task(pipeline.run(), name=f"pipeline:{pipeline.id}"))
                source_tasks = [
                    tg.create_task(supervise(source, self._route), name=f"source:{source.name}")
                    for source in self.sources
                ]
                tasks.extend(source_tasks)
                tasks.append(tg.create_task(notifier.watchdog(lambda: health(self)), name="watchdog"))
                notifier.send("READY=1")
                self.started.set()
                log.info(
                    "event=service_started sources=%d pipelines=%d sinks=%d",
                    len(self.sources),
                    len(self.pipelines),
                    len(self.sinks),
                )
                waiter: Awaitable[Any] = (stop or asyncio.Event()).wait()
                if run_for_s is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter, run_for_s)
                else:
                    await waiter
                notifier.send("STOPPING=1")
                await self._drain(source_tasks, drain_s)
                for task in tasks:
                    task.cancel()
        finally:
            await self._close_all()
            if metrics is not None:
                await metrics.stop()
            await self.outbox.close()
            self._executor.shutdown(wait=False, cancel_futures=True)
            log.info("event=service_stopped pending_results=%d", self.outbox.pending_rows)

    async def _close_all(self) -> None:
        components: list[Source | Sink] = [*self.sources, *self.sinks.values()]
        for component in components:
            await close_quietly(component)
