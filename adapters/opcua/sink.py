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
a fixed variable or another key is left out of the variables (`unmapped_values`) and stays in `Json`.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

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


def _coerce(vtype: VariableType, value: Scalar) -> Any:
    """`value` as the variable's type; a value of another kind becomes the type's "no value" (NaN, "", False)."""
    if vtype == "Double":
        return float(value) if isinstance(value, int | float) else math.nan
    if vtype == "String":
        return "" if value is None else str(value)
    return bool(value) if isinstance(value, bool | int | float) else False


@dataclass(slots=True)
class _Pipeline:
    """A pipeline's object node and its variables: name -> (node id, type)."""

    obj: Any
    variables: dict[str, tuple[Any, VariableType]] = field(default_factory=dict)
    keys: dict[str, str | None] = field(default_factory=dict)  # values key -> variable name (None: unmapped)


class OpcuaServerSink:
    """Serves each pipeline's latest result to SCADA as OPC UA variables (information model: module docstring)."""

    def __init__(self, config: OpcuaServerConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._server: Any = None
        self._ns = 0
        self._root: Any = None
        self._pipelines: dict[str, _Pipeline] = {}
        self._malformed = BurstLog("opcua_malformed_result", self.stats, "malformed")
        self._unmapped = BurstLog("opcua_unmapped_value", self.stats, "unmapped_values")

    @property
    def namespace_index(self) -> int:
        """Index of `namespace_uri` on the running server."""
        return self._ns

    async def open(self) -> None:
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
        from asyncua import ua

        if self._server is None:
            raise DeliveryError(f"{self.name}: results server is not open")
        try:
            if not NAME.match(result.pipeline):
                raise ValueError(f"pipeline name {result.pipeline!r} is not a valid node name")
            doc = dumps(result.to_json())
        except (TypeError, ValueError) as exc:  # a bad result must not block the outbox behind it
            self._malformed(sink=self.name, pipeline=result.pipeline, seq=result.seq, error=repr(exc))
            return
        p = self._pipelines.get(result.pipeline) or await self._add_pipeline(result.pipeline)
        source_ts = ns_to_dt(result.t_ns)
        writes: list[tuple[str, Any]] = [
            ("Decision", result.decision),
            ("Label", result.label or ""),
            ("Score", math.nan if result.score is None else float(result.score)),
            ("LatencyMs", result.latency_ns / 1e6),
            ("Model", result.model),
            ("Stream", result.stream),
            ("TimestampUtc", source_ts),
            ("Json", doc),
            *await self._value_variables(p, result),
            ("Seq", result.seq),  # last: a client triggered by Seq reads a consistent set
        ]
        server_ts = datetime.now(UTC)
        for var, value in writes:
            nodeid, vtype = p.variables[var]
            dv = ua.DataValue(
                ua.Variant(value, getattr(ua.VariantType, vtype)), SourceTimestamp=source_ts, ServerTimestamp=server_ts
            )
            await self._server.write_attribute_value(nodeid, dv)
        self.stats["delivered"] += 1

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await stop_server(server)
