"""`OpcuaServerSink`: serves each pipeline's latest result to SCADA as OPC UA variables (sink kind `opcua-server`).

Each pipeline's latest result sits under `Objects/EdgeRuntime/<pipeline>/`, in the namespace `namespace_uri`,
with string NodeIds `ns=<idx>;s=EdgeRuntime.<pipeline>.<Variable>`, so a SCADA tag binds once and keeps working
across restarts. The pipeline object appears on its first result. Variables (read-only, source timestamp = time
of the input, i.e. the result's `t_ns`) map the typed `Result`'s declared fields, never guess from task outputs:

============  ========  ================================================================
Variable      Type      Meaning
============  ========  ================================================================
Seq           Int64     result sequence number, strictly increasing; written last
Decision      String    ``result.decision`` (e.g. ``ok``/``reject``/``alarm``)
Label         String    ``result.label``, or empty
Score         Double    ``result.score``, or NaN
LatencyMs     Double    input-to-result latency in milliseconds
Model         String    ``name@version+sha256-prefix`` of the model that decided
Stream        String    the input stream the result is about
TimestampUtc  DateTime  time of the input (``t_ns``)
Json          String    ``result.to_json()`` (NaN as null), for the structured ``detail``
<Value>       Double    one per key of ``result.values``, CamelCase (``anomaly_score`` -> ``AnomalyScore``):
              Boolean   numbers (and missing values, as NaN) are Double, booleans Boolean, text String;
              String    created when the key is first seen for that pipeline, typed by that first value
============  ========  ================================================================

Seq is written after the other variables, so a client that reacts to a Seq change reads a consistent set. A
result that cannot be served (a pipeline name that is no node name, an unencodable detail) is counted as
`malformed` and skipped, so it cannot block the outbox behind it; a value key whose CamelCase name collides with
a fixed variable or another key is left out of the variables (`unmapped_values`) and stays in `Json`. Values are
converted defensively: a number no Double holds becomes NaN, a time outside OPC UA's DateTime range is replaced
by the server time (`bad_timestamps`), so no field of a result can jam the outbox behind it.

The asyncua server lives on its own thread and event loop: building it (seconds of CPU on a gateway), serving
clients and publishing subscriptions never hold up the service's loop (MQTT delivery, routing). If a variable
has disappeared (a node deleted), the write fails, the pipeline's nodes are rebuilt and the delivery is retried,
so the outbox keeps the result until it is really served (`nodes_rebuilt`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import numpy as np

from adapters.base import AdapterError, DeliveryError, Result, Scalar, Stats, dumps
from adapters.opcua.config import NAME, OpcuaServerConfig
from adapters.opcua.convert import EPOCH, ns_to_dt
from adapters.opcua.security import AccessRules, ResultsUsers, new_server, stop_server
from adapters.supervise import BurstLog

__all__ = ["FIXED_VARIABLES", "OpcuaServerSink", "variable_name"]

log = logging.getLogger("adapters.opcua")

VariableType = Literal["String", "Double", "Int64", "DateTime", "Boolean"]

FIXED_VARIABLES: tuple[tuple[str, VariableType], ...] = (
    ("Decision", "String"),
    ("Label", "String"),
    ("Score", "Double"),
    ("LatencyMs", "Double"),
    ("Model", "String"),
    ("Stream", "String"),
    ("TimestampUtc", "DateTime"),
    ("Json", "String"),
    ("Seq", "Int64"),  # last: written after the others
)
_FIXED_NAMES = frozenset(name for name, _ in FIXED_VARIABLES)
_INITIAL: dict[VariableType, Any] = {"String": "", "Double": math.nan, "Int64": -1, "DateTime": EPOCH, "Boolean": False}
_WORD = re.compile(r"[^0-9A-Za-z]+")


def variable_name(key: str) -> str:
    """CamelCase variable name of a `values` key: `anomaly_score` -> `AnomalyScore`, `n_grains` -> `NGrains`."""
    return "".join(part[:1].upper() + part[1:] for part in _WORD.split(key))


def _plain(value: Scalar | np.generic) -> Scalar:
    return value.item() if isinstance(value, np.generic) else value


def _type_of(value: Scalar) -> VariableType:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, str):
        return "String"
    return "Double"  # int, float and None (a measurement the task could not make this time)


def _double(value: object) -> float:
    """A Double for any number, NaN for anything a Double cannot hold (a 400-digit integer, a non-number)."""
    try:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:
        return math.nan


_MIN_DT_NS, _MAX_DT_NS = 0, 253_402_300_799 * 10**9  # 1970 .. 9999-12-31, what a datetime and ns_to_dt hold


def _coerce(vtype: VariableType, value: Scalar) -> Any:
    """`value` as the variable's type; a value of another kind becomes the type's "no value" (NaN, "", False)."""
    if vtype == "Double":
        return _double(value)
    if vtype == "String":
        return "" if value is None else str(value)
    return bool(value) if isinstance(value, bool | int | float) else False


@dataclass(slots=True)
class _Pipeline:
    """A pipeline's object node and its variables: name -> (node id, type)."""

    obj: Any
    variables: dict[str, tuple[Any, VariableType]] = field(default_factory=dict)
    keys: dict[str, str | None] = field(default_factory=dict)  # values key -> variable name (None: unmapped)


T = TypeVar("T")


class _ServerThread:
    """An event loop on a thread of its own, where every asyncua server call of one sink runs."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server loop; cancelling the caller cancels it there too."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class _NodeGoneError(Exception):
    """A variable of a pipeline is no longer in the address space."""


class OpcuaServerSink:
    """Serves each pipeline's latest result to SCADA as OPC UA variables (information model: module docstring)."""

    def __init__(self, config: OpcuaServerConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._server: Any = None
        self._thread: _ServerThread | None = None
        self._ns = 0
        self._root: Any = None
        self._pipelines: dict[str, _Pipeline] = {}
        self._malformed = BurstLog("opcua_malformed_result", self.stats, "malformed")
        self._unmapped = BurstLog("opcua_unmapped_value", self.stats, "unmapped_values")
        self._bad_time = BurstLog("opcua_bad_timestamp", self.stats, "bad_timestamps")

    @property
    def namespace_index(self) -> int:
        """Index of `namespace_uri` on the running server."""
        return self._ns

    async def on_server(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine that touches the asyncua server on the server's own loop (tests, tools)."""
        if self._thread is None:
            coro.close()
            raise DeliveryError(f"{self.name}: results server is not open")
        return await self._thread.call(coro)

    async def open(self) -> None:
        if self._thread is None:
            self._thread = _ServerThread(f"opcua-{self.name}")
        await self._thread.call(self._open())

    async def _open(self) -> None:
        from asyncua import ua

        cfg = self.config
        server = await new_server(
            cfg.endpoint,
            name=f"edge-runtime results {cfg.id}",
            application_uri=cfg.application_uri,
            security_policy=cfg.security_policy,
            security_mode=cfg.security_mode,
            certificate=cfg.certificate,
            private_key=cfg.private_key,
            trust_list=cfg.trust_list,
            access=(ResultsUsers(cfg.users, anonymous=cfg.anonymous), AccessRules()),
        )
        self._ns = await server.register_namespace(cfg.namespace_uri)
        self._root = await server.nodes.objects.add_object(
            ua.NodeId("EdgeRuntime", self._ns), ua.QualifiedName("EdgeRuntime", self._ns)
        )
        self._pipelines = {}
        try:
            await server.start()
        except Exception as exc:
            raise AdapterError(f"cannot serve results on {cfg.endpoint}: {exc!r}") from exc
        self._server = server
        log.info("event=opcua_results_serving sink=%s endpoint=%s", self.name, cfg.endpoint)

    async def _add_variable(self, p: _Pipeline, pipeline: str, var: str, vtype: VariableType) -> None:
        from asyncua import ua

        ns = self._ns
        node = await p.obj.add_variable(
            ua.NodeId(f"EdgeRuntime.{pipeline}.{var}", ns),
            ua.QualifiedName(var, ns),
            ua.Variant(_INITIAL[vtype], getattr(ua.VariantType, vtype)),
        )
        p.variables[var] = (node.nodeid, vtype)

    async def _add_pipeline(self, pipeline: str) -> _Pipeline:
        from asyncua import ua

        ns = self._ns
        obj = await self._root.add_object(ua.NodeId(f"EdgeRuntime.{pipeline}", ns), ua.QualifiedName(pipeline, ns))
        p = _Pipeline(obj)
        for var, vtype in FIXED_VARIABLES:
            await self._add_variable(p, pipeline, var, vtype)
        self._pipelines[pipeline] = p
        return p

    async def _rebuild(self, pipeline: str) -> None:
        """Remove what is left of a pipeline's nodes (and recreate the root if it went too); the next delivery
        adds them afresh."""
        from asyncua import ua

        self.stats["nodes_rebuilt"] += 1
        server, ns = self._server, self._ns
        self._pipelines.pop(pipeline, None)
        obj = server.get_node(ua.NodeId(f"EdgeRuntime.{pipeline}", ns))
        if ua.NodeId(f"EdgeRuntime.{pipeline}", ns) in server.iserver.aspace:
            await server.delete_nodes([obj], recursive=True)
        for other in list(self._pipelines.values()):  # variables of other pipelines may have gone too
            if any(nodeid not in server.iserver.aspace for nodeid, _ in other.variables.values()):
                self._pipelines = {k: v for k, v in self._pipelines.items() if v is not other}
        if ua.NodeId("EdgeRuntime", ns) not in server.iserver.aspace:
            self._pipelines = {}
            self._root = await server.nodes.objects.add_object(
                ua.NodeId("EdgeRuntime", ns), ua.QualifiedName("EdgeRuntime", ns)
            )

    async def _value_variables(self, p: _Pipeline, result: Result) -> list[tuple[str, Any]]:
        """(variable, value) for each key of `result.values`, creating the variables of keys seen first now."""
        out: list[tuple[str, Any]] = []
        for key, raw in result.values.items():
            value = _plain(raw)
            if key not in p.keys:
                var: str | None = variable_name(key)
                taken = {v for v in p.keys.values() if v is not None}
                if not var or var in _FIXED_NAMES or var in taken or not NAME.match(var):
                    self._unmapped(sink=self.name, pipeline=result.pipeline, key=key, variable=var)
                    var = None
                else:
                    await self._add_variable(p, result.pipeline, var, _type_of(value))
                p.keys[key] = var
            var = p.keys[key]
            if var is not None:
                out.append((var, _coerce(p.variables[var][1], value)))
        return out

    async def deliver(self, result: Result) -> None:
        if self._server is None or self._thread is None:
            raise DeliveryError(f"{self.name}: results server is not open")
        await self._thread.call(self._deliver(result))

    def _source_time(self, result: Result, now: datetime) -> datetime:
        if isinstance(result.t_ns, int) and _MIN_DT_NS <= result.t_ns <= _MAX_DT_NS:
            return ns_to_dt(result.t_ns)
        self._bad_time(sink=self.name, pipeline=result.pipeline, seq=result.seq, t_ns=str(result.t_ns)[:40])
        return now

    def _fixed(self, result: Result, doc: str, source_ts: datetime) -> list[tuple[str, Any]]:
        return [
            ("Decision", str(result.decision)),
            ("Label", str(result.label or "")),
            ("Score", _double(result.score)),
            ("LatencyMs", _double(result.latency_ns) / 1e6),
            ("Model", str(result.model)),
            ("Stream", str(result.stream)),
            ("TimestampUtc", source_ts),
            ("Json", doc),
        ]

    async def _deliver(self, result: Result) -> None:
        try:
            if not NAME.match(result.pipeline):
                raise ValueError(f"pipeline name {result.pipeline!r} is not a valid node name")
            if not isinstance(result.seq, int) or not 0 <= result.seq < 2**63:
                raise ValueError(f"seq {result.seq!r} is no Int64")
            doc = dumps(result.to_json())
            server_ts = datetime.now(UTC)
            source_ts = self._source_time(result, server_ts)
            fixed = self._fixed(result, doc, source_ts)
        except Exception as exc:  # a bad result must not block the outbox behind it
            self._malformed(sink=self.name, pipeline=result.pipeline, seq=result.seq, error=repr(exc)[:200])
            return
        for attempt in (1, 2):
            try:
                await self._write_all(result, fixed, source_ts, server_ts)
                break
            except _NodeGoneError as exc:
                log.warning("event=opcua_node_gone sink=%s pipeline=%s error=%s action=rebuild", self.name,
                            result.pipeline, exc)  # fmt: skip
                await self._rebuild(result.pipeline)
                if attempt == 2:  # still gone after a rebuild: fail, so the outbox keeps the result
                    raise DeliveryError(f"{self.name}: {exc}") from exc
        self.stats["delivered"] += 1

    async def _write_all(
        self, result: Result, fixed: list[tuple[str, Any]], source_ts: datetime, server_ts: datetime
    ) -> None:
        from asyncua import ua

        p = self._pipelines.get(result.pipeline) or await self._add_pipeline(result.pipeline)
        writes = [*fixed, *await self._value_variables(p, result), ("Seq", result.seq)]  # Seq last: consistent set
        aspace = self._server.iserver.aspace
        for var, value in writes:
            nodeid, vtype = p.variables[var]
            dv = ua.DataValue(
                ua.Variant(value, getattr(ua.VariantType, vtype)), SourceTimestamp=source_ts, ServerTimestamp=server_ts
            )
            # the address space's own write returns the status that Server.write_attribute_value drops
            status = await aspace.write_attribute_value(nodeid, ua.AttributeIds.Value, dv)
            if not status.is_good():
                raise _NodeGoneError(f"write of {nodeid.to_string()} failed: {status.name}")

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        server, self._server = self._server, None
        if thread is None:
            return
        try:
            if server is not None:
                await thread.call(stop_server(server))
        finally:
            thread.stop()
