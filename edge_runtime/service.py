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
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import EdgeRuntimeError, Reading, Result, Sample, ScalarGroup, Sink, Source, Stats, stream_names
from adapters.registry import make_sink, make_source
from adapters.supervise import Backoff, OutageLog, abort_quietly, cancel_and_wait, close_quietly, supervise
from edge_runtime import heap
from edge_runtime.compensation import Compensator, build_layers
from edge_runtime.config import Deployment, PipelineConfig, validate_file
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.metrics import Health, MetricsServer, health, make_registry
from edge_runtime.modelswap import ModelWatch, RunnerKey, load_candidate
from edge_runtime.outbox import Outbox, deliver_forever
from edge_runtime.pipeline import Pipeline
from edge_runtime.streams import StreamMap
from edge_runtime.tasks import make_task

if TYPE_CHECKING:
    from edge_runtime.web.app import UiServer

__all__ = ["Service"]

log = logging.getLogger("edge_runtime.service")

ResultObserver = Callable[[Result], None]

SINK_OPEN_TIMEOUT_S = 30.0  # above every adapter's own connect timeout, so theirs is the one that speaks
SINK_REOPEN_AFTER = 5  # failed delivery attempts in a row before a sink is closed and opened again
_Routes = tuple[list[Pipeline], list[Pipeline]]  # (pipelines a stream is an input of, a side input of)
_NOWHERE: _Routes = ([], [])  # the one route of every stream that no pipeline takes (compared by identity)

# called once per group of routed samples: a Modbus response's readings, a single sample from other sources
SampleObserver = Callable[[Sequence[Sample]], None]


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
        self._routes: StreamMap[str, _Routes] = StreamMap(svc.max_streams, self.stats, "routes_evicted")
        # Latest scalar reading per stream: exported as metrics, so tags without a model are still visible.
        self.latest: StreamMap[str, Reading] = StreamMap(svc.max_streams, self.stats, "latest_evicted")
        self._outputs: dict[str, list[str]] = {}
        outbox_path = Path(svc.outbox.path)
        if not outbox_path.is_absolute():
            outbox_path = self.base_dir / outbox_path
        self.outbox = Outbox(outbox_path, max_rows=svc.outbox.max_rows, when_full=svc.outbox.when_full)
        self._executor = ThreadPoolExecutor(max_workers=svc.inference_workers, thread_name_prefix="infer")
        self.started = asyncio.Event()
        self.ui: UiServer | None = None  # the operator page, while it is served
        # reload (SIGHUP): the running task group and each component's task, by config id
        self._runners: dict[RunnerKey, ModelRunner] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._source_tasks: dict[str, asyncio.Task[Any]] = {}
        self._sink_tasks: dict[str, asyncio.Task[Any]] = {}
        self._pipeline_tasks: dict[int, asyncio.Task[Any]] = {}  # by id(pipeline): old and new share a name
        self._reload_lock = asyncio.Lock()
        self.model_watch = ModelWatch(lambda cfg, runner: make_task(cfg.task, runner), self._swapped)
        self.registry = make_registry(self)  # process/platform metrics; the service's own: metrics.gather per scrape
        self.metrics: MetricsServer | None = None

    def load(self) -> None:
        """Open models and build components; raises ModelError/AdapterError before anything runs."""
        for p in self.deployment.pipelines:
            self.model_watch.note(p.id, p.model)
            self.pipelines.append(self._build_pipeline(p, self._runner(p)))
            self._outputs[p.id] = list(p.outputs)
        self.sources = [make_source(d) for d in self.deployment.devices]
        self.sinks = {s.id: make_sink(s) for s in self.deployment.sinks}
        if any(not p.waveform for p in self.pipelines):  # frames: OpenCV works on them in the workers
            import cv2

            # OpenCV's default is a thread per core inside every call, on top of the inference workers
            cv2.setNumThreads(self.deployment.service.opencv_threads)

    def _runner(self, p: PipelineConfig) -> ModelRunner:
        """The pipeline's model, shared by pipelines that name the same model, variant and threads."""
        key = (p.model.name, p.model.variant, p.model.intra_op_threads)
        if key not in self._runners:
            self._runners[key] = load_model(
                p.model.name, variant=p.model.variant, intra_op_threads=p.model.intra_op_threads
            )
        return self._runners[key]

    def _swapped(self, key: RunnerKey, runner: ModelRunner) -> None:
        """A candidate won its shadow run: pipelines built from now on (a reload) start with it too."""
        self._runners[key] = runner

    def _watched(self) -> list[tuple[Pipeline, PipelineConfig]]:
        configs = {p.id: p for p in self.deployment.pipelines}
        return [(p, configs[p.id]) for p in self.pipelines if p.id in configs]

    def _build_pipeline(self, p: PipelineConfig, runner: ModelRunner) -> Pipeline:
        return Pipeline(
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
                build_layers(p.compensation, self.config_dir, p.id, waveform="window" in runner.manifest.preprocessing)
            ),
            max_streams=self.deployment.service.max_streams,
        )

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
        await self._route_batch((sample,))

    async def _route_batch(self, samples: Sequence[Sample]) -> None:
        """Route samples in order. A `BatchSource`'s groups (a Modbus response: tens of tags) come here whole, so
        the per-sample work is the dictionary updates and the pipelines' own."""
        self.stats["samples"] += len(samples)
        for observer in self.sample_observers:
            observer(samples)
        if isinstance(samples, ScalarGroup):
            self.latest.update(zip(samples.streams, samples, strict=True))
        else:
            self.latest.update((s.stream, s) for s in samples if isinstance(s, Reading) and s.value.ndim == 0)
        await self._dispatch(samples)

    async def _dispatch(self, samples: Sequence[Sample]) -> None:
        """Each sample to the pipelines it is an input or a side input of, routes looked up once per group. A reload
        that swaps the pipelines while the group waits on a full queue sends the rest to the new ones."""
        pipelines = self.pipelines
        found = self._routes.get_many(stream_names(samples))
        if found.count(_NOWHERE) == len(found):  # C-speed identity test: most tags of a PLC feed no model
            return
        for i, (sample, routes) in enumerate(zip(samples, found, strict=True)):
            if self.pipelines is not pipelines:
                await self._dispatch(samples[i:])
                return
            if routes is None:
                targets = [p for p in self.pipelines if p.matches(sample.stream)]
                sides = [p for p in self.pipelines if p.wants_side_input(sample.stream)]
                routes = (targets, sides) if targets or sides else _NOWHERE
                self._routes[sample.stream] = routes
            targets, sides = routes
            if sides and isinstance(sample, Reading):
                for pipeline in sides:
                    pipeline.side_input(sample)
            for pipeline in targets:
                await pipeline.feed(sample)

    async def feed(self, sample: Sample) -> None:
        """Route one sample as if a source had emitted it (`edge-runtime replay` feeds recorded samples here)."""
        await self._route(sample)

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
        for source in self.sources:  # connections dropped first: an answer on its way is not read mid-stop
            abort_quietly(source)
        await asyncio.gather(*(cancel_and_wait(task) for task in source_tasks))
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
        settled = False
        try:
            if self.deployment.service.metrics_listen:
                metrics = self.metrics = MetricsServer(self.deployment.service.metrics_listen, self)
            await self._start_ui()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                # a busy metrics port is retried in the background, never a reason to exit
                metrics_task = None if metrics is None else tg.create_task(metrics.serve(), name="metrics")
                self._start_all()
                watchdog = tg.create_task(notifier.watchdog(lambda: health(self)), name="watchdog")
                watch_s = self.deployment.service.model_watch_s
                model_watch = tg.create_task(self.model_watch.run(watch_s, self._watched)) if watch_s else None
                heap.settle(hold=True)
                settled = True
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
                async with self._reload_lock:  # a reload in progress finishes first
                    await self._drain(list(self._source_tasks.values()), drain_s)
                    tasks = [*self._sink_tasks.values(), *self._pipeline_tasks.values(), watchdog, metrics_task]
                    await asyncio.gather(*(cancel_and_wait(t) for t in [*tasks, model_watch] if t is not None))
                    self._tg = None
        finally:
            if settled:
                heap.release()
            await self._close_all()
            if metrics is not None:
                await metrics.stop()
            if self.ui is not None:
                await self.ui.stop()
                self.ui = None
            await self.outbox.close()
            self._executor.shutdown(wait=False, cancel_futures=True)
            log.info("event=service_stopped pending_results=%d", self.outbox.pending_rows)

    def _start_all(self) -> None:
        """Start every sink, pipeline and source; a method of its own so that `run`'s frame, which lives as long
        as the service, holds none of them (a reload must be able to free what it replaces)."""
        for sink_config in self.deployment.sinks:
            self._start_sink(sink_config.id, sink_config.max_age())
        for pipeline in self.pipelines:
            self._start_pipeline(pipeline)
        for device, source in zip(self.deployment.devices, self.sources, strict=True):
            self._start_source(device.id, source)

    async def _start_ui(self) -> None:
        """The operator page (`service.ui_listen`); one that cannot start is logged, and the line runs without it."""
        listen = self.deployment.service.ui_listen
        if not listen:
            return
        from edge_runtime.web.app import UiServer  # aiohttp loads only when the page is configured

        try:
            ui = UiServer(listen, self)
            await ui.start()
        except (EdgeRuntimeError, OSError) as exc:
            self.stats["ui_failures"] += 1
            log.error("event=ui_not_started listen=%s error=%s (the line runs without its page)", listen, exc)
            return
        self.ui = ui

    # -- reload (SIGHUP) ----------------------------------------------------------------------------------------

    def _start_sink(self, sink_id: str, max_age_s: float | None) -> None:
        assert self._tg is not None
        sink = self.sinks[sink_id]
        self._sink_tasks[sink_id] = self._tg.create_task(self._run_sink(sink, max_age_s), name=f"sink:{sink_id}")

    def _start_pipeline(self, pipeline: Pipeline) -> None:
        assert self._tg is not None
        self._pipeline_tasks[id(pipeline)] = self._tg.create_task(pipeline.run(), name=f"pipeline:{pipeline.id}")

    def _start_source(self, device_id: str, source: Source) -> None:
        assert self._tg is not None
        run = supervise(source, self._route, emit_batch=self._route_batch)
        self._source_tasks[device_id] = self._tg.create_task(run, name=f"source:{device_id}")

    @staticmethod
    async def _cancel(task: asyncio.Task[Any] | None) -> None:
        if task is not None and await cancel_and_wait(task):
            await asyncio.gather(task, return_exceptions=True)

    async def reload_file(self, path: Path | str) -> bool:
        """SIGHUP: validate `path` first; an invalid file is refused (logged with every error) and the running
        deployment stays. Returns whether the new deployment was applied."""
        deployment, errors = await asyncio.to_thread(validate_file, path)
        if deployment is None:
            self.stats["reloads_rejected"] += 1
            log.error(
                "event=reload_rejected file=%s errors=%d the running deployment stays: %s",
                path,
                len(errors),
                " | ".join(str(e) for e in errors),
            )
            return False
        try:
            await self.reload(deployment)
        except EdgeRuntimeError as exc:  # e.g. a model that fails its checks: built first, so nothing stopped
            self.stats["reloads_rejected"] += 1
            log.error("event=reload_failed file=%s error=%s the running deployment stays", path, exc)
            return False
        return True

    async def reload(self, new: Deployment) -> dict[str, list[str]]:
        """Apply `new` while running. Devices, pipelines and sinks whose config is unchanged keep running
        untouched (no reconnect, no gap); changed ones are restarted, removed ones stopped, new ones started.
        A changed pipeline is replaced without a gap: the new one takes the inputs from the moment it exists,
        the old one finishes what it holds. Results wait in the outbox throughout (a removed sink's rows stay
        there). The `service` section (outbox, listen addresses, workers) takes effect at the next start."""
        if self._tg is None:
            raise RuntimeError("reload() needs a running service")
        try:
            async with self._reload_lock:
                return await self._reload(new)
        finally:  # also after a reload that failed part-way: what it retired was frozen at start-up
            if self._tg is not None:  # still running (holding the freeze)
                heap.settle()

    async def _reload(self, new: Deployment) -> dict[str, list[str]]:
        if self._tg is None:  # stopped while this reload waited for the lock
            raise RuntimeError("reload() needs a running service")
        old = self.deployment
        changed: dict[str, list[str]] = {"restarted": [], "started": [], "stopped": [], "kept": [], "shadowing": []}
        if new.service != old.service:
            log.warning("event=reload_service_section_changed effect=next_start")
        # pipelines first (a new model is loaded before anything is stopped: a bad one leaves all running)
        old_p = {p.id: p for p in old.pipelines}
        new_p = {p.id: p for p in new.pipelines}
        built: dict[str, Pipeline] = {}
        candidates: dict[str, ModelRunner] = {}  # pipelines whose `model` alone changed: shadow, then swap
        for pid, cfg in new_p.items():
            was = old_p.get(pid)
            if was == cfg:
                continue
            if was is not None and was.model_copy(update={"model": cfg.model}) == cfg:
                if not was.model.same_model(cfg.model):
                    candidates[pid] = await asyncio.to_thread(load_candidate, cfg.model)
                continue
            built[pid] = self._build_pipeline(cfg, await asyncio.to_thread(self._runner, cfg))
        # sinks
        old_s = {s.id: s for s in old.sinks}
        new_s = {s.id: s for s in new.sinks}
        for sid, scfg in old_s.items():
            if new_s.get(sid) != scfg:
                await self._cancel(self._sink_tasks.pop(sid, None))
                await close_quietly(self.sinks.pop(sid))
                changed["stopped" if sid not in new_s else "restarted"].append(f"sink:{sid}")
        for sid, scfg in new_s.items():
            if old_s.get(sid) != scfg:
                self.sinks[sid] = make_sink(scfg)
                self._start_sink(sid, scfg.max_age())
                if sid not in old_s:
                    changed["started"].append(f"sink:{sid}")
            else:
                changed["kept"].append(f"sink:{sid}")
        # pipelines: swap in one step (no await between), so every sample goes to exactly one of them
        retired = [p for p in self.pipelines if p.id not in new_p or p.id in built]
        kept = [p for p in self.pipelines if p.id in new_p and p.id not in built]
        self.pipelines = kept + [built[pid] for pid in new_p if pid in built]
        self._outputs = {pid: list(cfg.outputs) for pid, cfg in new_p.items()}
        self._routes.clear()
        self.deployment = new.model_copy(update={"service": old.service})
        for pid in built:
            self.model_watch.note(pid, new_p[pid].model)
            self._start_pipeline(built[pid])
        for p in kept:
            if p.id in candidates:
                self.model_watch.note(p.id, new_p[p.id].model)
                if self.model_watch.offer(p, new_p[p.id], candidates[p.id]):
                    changed["shadowing"].append(f"pipeline:{p.id}")
        changed["kept"] += [f"pipeline:{p.id}" for p in kept]
        for p in retired:
            await self._retire(p)
            changed["restarted" if p.id in new_p else "stopped"].append(f"pipeline:{p.id}")
        changed["started"] += [f"pipeline:{pid}" for pid in built if pid not in old_p]
        # devices
        old_d = {d.id: d for d in old.devices}
        new_d = {d.id: d for d in new.devices}
        sources = dict(zip((d.id for d in old.devices), self.sources, strict=True))
        for did, dcfg in old_d.items():
            if new_d.get(did) != dcfg:
                abort_quietly(sources[did])
                await self._cancel(self._source_tasks.pop(did, None))  # supervise closes the source
                sources.pop(did)
                changed["stopped" if did not in new_d else "restarted"].append(f"device:{did}")
        for did, dcfg in new_d.items():
            if old_d.get(did) != dcfg:
                sources[did] = make_source(dcfg)
                self._start_source(did, sources[did])
                if did not in old_d:
                    changed["started"].append(f"device:{did}")
            else:
                changed["kept"].append(f"device:{did}")
        self.sources = [sources[d.id] for d in new.devices]
        self.stats["reloads"] += 1
        log.info(
            "event=reloaded restarted=%s started=%s stopped=%s shadowing=%s kept=%d",
            ",".join(changed["restarted"]) or "-",
            ",".join(changed["started"]) or "-",
            ",".join(changed["stopped"]) or "-",
            ",".join(changed["shadowing"]) or "-",
            len(changed["kept"]),
        )
        return changed

    async def _retire(self, pipeline: Pipeline, timeout_s: float = 10.0) -> None:
        """Let a replaced pipeline store the results of what it already took, then stop it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not pipeline.idle and loop.time() < deadline:  # noqa: ASYNC110 (the pipeline's own counters)
            await asyncio.sleep(0.02)
        if not pipeline.idle:
            log.warning("event=reload_pipeline_not_drained pipeline=%s", pipeline.id)
        await self._cancel(self._pipeline_tasks.pop(id(pipeline), None))

    async def _close_all(self) -> None:
        components: list[Source | Sink] = [*self.sources, *self.sinks.values()]
        for component in components:
            await close_quietly(component)
