"""`OpcuaSource`: reads a machine's OPC UA server (device kind `opcua`).

One session per device. Nodes in `subscribe` mode share one subscription (publishing interval
`publishing_interval_ms`); each monitored item asks for its node's `sampling_interval_ms` and a server-side queue
of `queue_size` values, so a burst of changes between two publishes is queued rather than overwritten (a queue of
one, the library default, silently keeps only the last change). Nodes in `poll` mode are read in one request per
interval, for servers whose subscriptions are broken or limited. Every value becomes a `Reading`:
`stream = f"{id}.{name}"`, `t_ns` = source timestamp, else server timestamp, else the gateway clock; the
StatusCode becomes `quality` (Good -> good, Uncertain -> uncertain, Bad -> bad); arrays are shape `(n,)` and
carry `rate_hz` when the node declares one (a waveform block).

Recovery: a server restart must not leave a gateway silent. A socket closed by the server is noticed within
0.25 s; a server that stops answering without closing (cable, frozen PLC) is caught by asyncua's watchdog, which
reads `Server/ServerStatus/State` every `watchdog_interval_s`, each read bounded by `timeout_s`. A closed socket,
a failed watchdog read, a subscription status change to a Bad code (BadShutdown, BadTimeout), a failed poll or a
dead background task ends `stream()` with `AdapterError` (after the readings received before the failure).
`adapters.supervise.supervise` then closes the session and reopens it with back-off, which creates a new session
and new subscriptions: a restarted server has forgotten the old ones, so nothing tries to transfer them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import AdapterError, Reading, Stats, now_ns
from adapters.opcua.config import OpcuaConfig, OpcuaNode
from adapters.opcua.convert import dt_to_ns, status_quality
from adapters.opcua.security import secure_client
from adapters.supervise import BurstLog, DecodeGuard, cancel_and_wait

__all__ = ["OpcuaSource"]

log = logging.getLogger("adapters.opcua")


@dataclass(frozen=True, slots=True)
class _Binding:
    """How one node's values become readings; resolved once at open so notifications only look it up."""

    stream: str
    unit: str
    is_array: bool
    rate_hz: float | None


class _Handler:
    """asyncua subscription handler; plain methods, so asyncua calls them inline without creating tasks."""

    def __init__(self, source: OpcuaSource) -> None:
        self._source = source

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self._source._on_value(node.nodeid, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        code = status.Status
        if not code.is_good():
            self._source._fail(AdapterError(f"subscription status {code.name}"))


def resolve_node_id(node_id: str, namespaces: Sequence[str]) -> str:
    """`nsu=URI;s=...` as `ns=<index of URI in the server's namespace array>;s=...`; other forms unchanged.
    Raises KeyError when the server has no such namespace."""
    if not node_id.startswith("nsu="):
        return node_id
    uri, _, rest = node_id[4:].partition(";")
    try:
        return f"ns={list(namespaces).index(uri)};{rest}"
    except ValueError:
        raise KeyError(uri) from None


async def _resolved_node_ids(client: Any, cfg: OpcuaConfig) -> dict[str, str]:
    """Node ids by name, `nsu=` resolved through this session's namespace array (read again on every open,
    since a restarted or updated server may number its namespaces differently)."""
    if not any(n.node_id.startswith("nsu=") for n in cfg.nodes):
        return {n.name: n.node_id for n in cfg.nodes}
    try:
        namespaces = await asyncio.wait_for(client.get_namespace_array(), cfg.timeout_s)
    except Exception as exc:
        raise AdapterError(f"{cfg.id}: cannot read the namespace array of {cfg.endpoint}: {exc!r}") from exc
    out = {}
    for n in cfg.nodes:
        try:
            out[n.name] = resolve_node_id(n.node_id, namespaces)
        except KeyError as exc:
            raise AdapterError(
                f"{cfg.id}: node {n.name}: namespace {exc.args[0]!r} is not on {cfg.endpoint} "
                f"(its namespaces: {list(namespaces)})"
            ) from None
    return out


class OpcuaSource:
    """Reads a machine's OPC UA server; see the module docstring for timestamps, quality and recovery."""

    def __init__(self, config: OpcuaConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._client: Any = None
        self._queue: asyncio.Queue[Reading | None] = asyncio.Queue(config.buffer_size)
        self._error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bindings: dict[Any, _Binding] = {}
        self._malformed = BurstLog("opcua_malformed_value", self.stats, "malformed")
        self._guard = DecodeGuard("opcua_malformed_value", self.stats, "malformed", device=self.name)
        self._dropped = BurstLog("opcua_buffer_full", self.stats, "dropped")

    async def open(self) -> None:
        from asyncua import Client

        cfg = self.config
        self._queue = asyncio.Queue(cfg.buffer_size)
        self._error = None
        client = Client(url=cfg.endpoint, timeout=cfg.timeout_s, watchdog_intervall=cfg.watchdog_interval_s)
        client.name = client.description = f"edge-runtime {cfg.id}"
        client.application_uri = cfg.application_uri
        client.session_timeout = int(cfg.session_timeout_s * 1000)
        await secure_client(client, cfg)
        client.connection_lost_callback = self._on_connection_lost
        self._client = client
        try:
            await client.connect()
        except Exception as exc:
            self._client = None  # connect() cleaned up after itself
            raise AdapterError(f"cannot connect to {cfg.endpoint}: {exc!r}") from exc
        try:
            node_ids = await _resolved_node_ids(client, cfg)
        except AdapterError:
            await self.close()
            raise
        nodes = {n.name: client.get_node(node_ids[n.name]) for n in cfg.nodes}
        self._bindings = {
            nodes[n.name].nodeid: _Binding(f"{cfg.id}.{n.name}", n.unit, n.is_array, n.rate_hz) for n in cfg.nodes
        }
        subscribed = [n for n in cfg.nodes if n.mode == "subscribe"]
        if subscribed:
            await self._subscribe(client, subscribed, nodes)
        polled: dict[float, list[OpcuaNode]] = defaultdict(list)
        for n in cfg.nodes:
            if n.mode == "poll":
                polled[max(n.sampling_interval_ms, 10.0)].append(n)
        for interval_ms, group in polled.items():
            self._tasks.append(asyncio.create_task(self._poll(interval_ms / 1000, [nodes[n.name] for n in group])))
        self._tasks.append(asyncio.create_task(self._watch()))

    async def _subscribe(self, client: Any, subscribed: list[OpcuaNode], nodes: Mapping[str, Any]) -> None:
        from asyncua import ua

        sub = await client.create_subscription(self.config.publishing_interval_ms, _Handler(self))
        by_interval: dict[float, list[OpcuaNode]] = defaultdict(list)
        for n in subscribed:
            by_interval[n.sampling_interval_ms].append(n)
        for interval_ms, group in by_interval.items():
            handles = await sub.subscribe_data_change(
                [nodes[n.name] for n in group], queuesize=self.config.queue_size, sampling_interval=interval_ms
            )
            for n, handle in zip(group, handles, strict=True):
                if isinstance(handle, ua.StatusCode):  # the rest of the device still flows
                    self.stats["node_errors"] += 1
                    log.error(
                        "event=opcua_node_rejected device=%s node=%s status=%s", self.name, n.node_id, handle.name
                    )

    def stream(self) -> AsyncIterator[Reading]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Reading]:
        if self._client is None:
            raise AdapterError(f"{self.name}: stream() before open()")
        queue = self._queue
        while True:
            item = await queue.get()
            if item is None:  # the failure marker, queued after every reading received before the failure
                raise AdapterError(f"{self.name}: connection lost: {self._error!r}") from self._error
            yield item

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        # asyncua's request path uses wait_for, which in Python 3.11 can lose one cancel(): repeat until they end
        await asyncio.gather(*(cancel_and_wait(task) for task in tasks))
        await asyncio.gather(*tasks, return_exceptions=True)  # unlike suppress(), lets our own cancellation through
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), self.config.timeout_s)
            except Exception as exc:  # the server is usually gone when we get here
                log.debug("event=opcua_disconnect_failed device=%s error=%r", self.name, exc)

    # -- callbacks and background tasks ------------------------------------------------------------------------

    def _on_value(self, nodeid: Any, dv: Any) -> None:
        binding = self._bindings.get(nodeid)
        if binding is not None:
            self._accept(binding, dv)

    def _accept(self, binding: _Binding, dv: Any) -> None:
        """Every value, subscribed or polled, is converted through the guard: a variant the conversion cannot
        hold is counted, never raised into asyncua's callback or the poll task."""
        reading = self._guard(self._reading, binding, dv, stream=binding.stream)
        if reading is not None:
            self._put(reading)

    def _reading(self, b: _Binding, dv: Any) -> Reading:
        quality = status_quality(dv.StatusCode)
        ts = dv.SourceTimestamp or dv.ServerTimestamp
        t_ns = dt_to_ns(ts) if ts is not None else now_ns()
        if not 0 <= t_ns < 2**63:  # a device clock never set (1601) or garbage: stamped on arrival instead
            t_ns = now_ns()
        raw = dv.Value.Value if dv.Value is not None else None
        value: npt.NDArray[Any]
        if raw is None:
            value = np.empty(0) if b.is_array else np.array(np.nan)
            quality = "bad"
        else:
            try:
                value = np.asarray(raw)
            except (TypeError, ValueError) as exc:  # an ExtensionObject or other type numpy cannot hold
                self._malformed(device=self.name, stream=b.stream, error=repr(exc))
                value, quality = np.array(np.nan), "bad"
            if b.is_array and value.ndim != 1:
                value = value.reshape(-1)
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                quality = "bad"  # the server's NaN/Inf means no value, as a Modbus fault word does
        return Reading(b.stream, t_ns, value, quality, b.unit, b.rate_hz if b.is_array else None)

    def _put(self, reading: Reading) -> None:
        try:
            self._queue.put_nowait(reading)
        except asyncio.QueueFull:
            self._dropped(device=self.name, size=self.config.buffer_size)

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        log.warning("event=opcua_connection_lost device=%s error=%r", self.name, exc)
        if self._queue.full():  # make room for the marker: the newest readings are worth less than recovery
            self._queue.get_nowait()
            self.stats["dropped"] += 1
        self._queue.put_nowait(None)

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._fail(exc)

    async def _watch(self) -> None:
        """Detect a closed socket at once, and surface failures of asyncua's background tasks.

        asyncua notices a socket closed by a stopping server only when its next request times out (watchdog
        interval + `timeout_s`); the socket state is known immediately, so it is checked here every 0.25 s.
        """
        period = min(0.25, self.config.watchdog_interval_s)
        while self._error is None:
            await asyncio.sleep(period)
            protocol = self._client.uaclient.protocol
            if protocol is None or protocol.state == "closed":
                self._fail(ConnectionError("socket closed by the server"))
                return
            try:
                await self._client.check_connection()
            except Exception as exc:
                self._fail(exc)

    async def _poll(self, interval_s: float, nodes: list[Any]) -> None:
        client = self._client
        bindings = [self._bindings[n.nodeid] for n in nodes]
        next_t = time.monotonic()
        while True:
            try:
                values = await client.read_attributes(nodes)
            except Exception as exc:
                self._fail(exc)
                return
            for b, dv in zip(bindings, values, strict=True):
                self._accept(b, dv)
            next_t += interval_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind: skip missed ticks instead of bursting
                next_t = time.monotonic()
                delay = 0.0
            await asyncio.sleep(delay)
