"""Value types, role interfaces and the error tree shared by every adapter.

Adapters know protocols, not models. They turn a machine's feed into `Reading`s and `Frame`s and deliver `Result`s
handed to them. Retries around a whole session, bounded queues, batching and metrics live in the pipeline
(`edge_runtime`), which only sees the small protocols below.

Errors form one tree::

    EdgeRuntimeError
    ├── ConfigError          (edge_runtime.config: a bad deployment or calibration file)
    ├── ModelError           (edge_runtime.inference: checksum or I/O mismatch)
    ├── AdapterError         (a protocol component failed; the supervisor reconnects)
    │   └── DeliveryError    (a sink could not confirm delivery; the outbox keeps the result)
    ├── DataSetError         (edge_runtime.paths: a labelled data directory is unusable)
    └── CalibrationError     (edge_runtime.compensation: a calibration does not fit the pipeline)
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

__all__ = [
    "AdapterError",
    "AddressBlock",
    "BatchSource",
    "DeliveryError",
    "DeviceConfigBase",
    "EdgeRuntimeError",
    "ExclusiveResource",
    "Frame",
    "Quality",
    "Reading",
    "Result",
    "Sample",
    "Scalar",
    "ScalarGroup",
    "Sink",
    "SinkConfigBase",
    "Source",
    "Stats",
    "StrictModel",
    "dumps",
    "jsonable",
    "now_ns",
    "scalar_readings",
    "stream_names",
]

Quality = Literal["good", "uncertain", "bad"]
Scalar = float | int | str | bool | None


class EdgeRuntimeError(Exception):
    """Root of every error the product raises on purpose."""


class AdapterError(EdgeRuntimeError):
    """A protocol component failed (connection lost, device refused); the supervisor reopens it."""


class DeliveryError(AdapterError):
    """A sink could not confirm delivery; the outbox keeps the result and retries."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable, floats are finite (`.inf` and
    `.nan` are refused everywhere; sizes and ports are `adapters.types`, which also refuse booleans)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class ExclusiveResource:
    """Something only one device may own (a serial line): the deployment's cross-check refuses a second owner."""

    field: str  # the config field that names it, for the FILE:LINE error
    name: str  # e.g. "serial port '/dev/ttyUSB0'"
    hint: str  # what to do instead


@dataclass(frozen=True, slots=True)
class AddressBlock:
    """A block of addresses on one connection (`endpoint`, e.g. "tcp 10.0.0.5:502", "serial /dev/ttyUSB0"): a
    device's never-write ranges, or what a write-back sink writes. The cross-check refuses writes into the former."""

    endpoint: str
    table: str
    first: int
    last: int
    field: str  # the config path under the device or sink that declares it, for the FILE:LINE error

    def meets(self, other: AddressBlock) -> bool:
        return (self.endpoint, self.table) == (other.endpoint, other.table) and (
            self.first <= other.last and other.first <= self.last
        )


class DeviceConfigBase(StrictModel):
    """What the deployment's cross-checks ask of every device config, whatever its protocol."""

    # values a device profile validated on its own (`simulate`, `validate PROFILE`) is given for the fields that
    # only a deployment supplies (e.g. a camera's `source`); `id` defaults to the file's stem
    PROFILE_DEFAULTS: ClassVar[Mapping[str, Any]] = {}

    id: str
    kind: str

    def stream_prefixes(self) -> list[str]:
        """First dotted part of every stream this device produces (fnmatch patterns allowed)."""
        return [self.id]

    def stream_names(self) -> list[str] | None:
        """Every stream this device produces, when the config names them all (tags, nodes); else None."""
        return None

    def exclusive_resources(self) -> list[ExclusiveResource]:
        return []

    def forbidden_blocks(self) -> list[AddressBlock]:
        """Addresses no sink may write on this device's connection (a PLC's program area)."""
        return []


class SinkConfigBase(StrictModel):
    """What the service asks of every sink config, whatever its protocol."""

    id: str
    kind: str

    def max_age(self) -> float | None:
        """Results older than this many seconds are not delivered (a stale ejector pulse is worse than none)."""
        return None

    def written_blocks(self) -> list[AddressBlock]:
        """Addresses this sink may write, by connection (checked against the devices' `forbidden_blocks`)."""
        return []


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays become numbers and lists, non-finite floats become null
    (JSON has no NaN), sets sorted lists, bytes hex. Anything else is returned as it is."""
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return [jsonable(v) for v in sorted(obj, key=str)]
    if isinstance(obj, bytes | bytearray):
        return obj.hex()
    return obj


def dumps(obj: Any) -> str:
    """The one JSON encoder of the product (outbox rows, MQTT payloads, the OPC UA `Json` variable, reports):
    compact, NaN and Inf as null, numpy as plain values; any other object as its repr, because a result that
    cannot be stored or sent would stop its pipeline."""
    return json.dumps(jsonable(obj), separators=(",", ":"), allow_nan=False, default=repr)


def now_ns() -> int:
    """UTC epoch nanoseconds: the one clock adapters stamp readings with."""
    return time.time_ns()


class Reading(NamedTuple):
    """One normalized value from a machine: a scalar (shape `()`) or a waveform block (shape `(n,)`).

    A named tuple, not a frozen dataclass: as immutable, and built in a third of the time (a frozen dataclass sets
    each field through `object.__setattr__`, 2 us a reading, a quarter of the Modbus ingest's CPU per tag).
    """

    stream: str
    t_ns: int
    value: npt.NDArray[Any]
    quality: Quality = "good"
    unit: str = ""
    rate_hz: float | None = None  # set for waveform blocks: t_ns is the time of the first sample


_tuple_new = tuple.__new__


def scalar_readings(
    streams: Sequence[str], t_ns: int, values: npt.NDArray[Any], quality: Sequence[Quality], units: Sequence[str]
) -> list[Reading]:
    """One scalar `Reading` per element of `values` (0-d views of it, no copy), for a source that decodes a whole
    response at once. Builds the tuples directly: half the cost of calling `Reading(...)` per tag."""
    views = [values[j, ...] for j in range(len(values))]
    return [
        _tuple_new(Reading, (stream, t_ns, value, q, unit, None))
        for stream, value, q, unit in zip(streams, views, quality, units, strict=True)
    ]


class ScalarGroup(tuple[Reading, ...]):
    """The scalar readings of one response with their stream names in the same order (`streams[i]` is
    `self[i].stream`); immutable, so the two cannot drift apart.

    The router, the latest-value map and the operator page take the names from `streams` rather than testing and
    reading every sample (at a 10 ms Modbus poll that was ~0.25 us of the service's ~5 us a tag). The source that
    builds a group vouches for the contract (the constructor checks only the lengths: checking each name would cost
    what the names save). A slice is a plain tuple, which consumers treat the generic way.
    """

    streams: tuple[str, ...]

    def __new__(cls, readings: Iterable[Reading], streams: Sequence[str]) -> ScalarGroup:
        group = super().__new__(cls, readings)
        if len(group) != len(streams):
            raise ValueError(f"a group of {len(group)} readings with {len(streams)} stream names")
        group.streams = tuple(streams)
        return group


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera image: H x W x 3 uint8 BGR (OpenCV convention)."""

    stream: str
    t_ns: int
    image: npt.NDArray[np.uint8]
    meta: Mapping[str, float | str] = field(default_factory=dict)


Sample = Reading | Frame


def stream_names(samples: Sequence[Sample]) -> Sequence[str]:
    """The stream of each sample, in order; a `ScalarGroup`'s without touching its samples."""
    return samples.streams if isinstance(samples, ScalarGroup) else [s.stream for s in samples]


@dataclass(frozen=True, slots=True)
class Result:
    """One inference outcome, built once by the task and then stored, delivered and observed as it is.

    Every task fills the typed head (`stream`, `decision`, `label`, `score`, `quality`); `values` holds the declared
    scalar measurements (e.g. `anomaly_score`, `n_grains`), which sinks may map to typed variables; `detail`
    holds structured output (per-class scores, boxes, grains) that sinks deliver as JSON. `seq` is 0 until the
    outbox allocates it (strictly increasing per pipeline, surviving restarts).
    """

    HEAD: ClassVar[tuple[str, ...]] = (
        "pipeline",
        "seq",
        "t_ns",
        "latency_ns",
        "model",
        "stream",
        "decision",
        "quality",
    )

    pipeline: str
    stream: str
    t_ns: int  # of the input (first sample of a window, capture time of a frame)
    decision: str
    label: str | None = None
    score: float | None = None
    values: Mapping[str, Scalar] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0
    latency_ns: int = 0  # from the pipeline receiving the input to the result being stored
    model: str = ""  # name@version+sha256 prefix
    quality: Quality = "good"  # `uncertain` when an input or a compensation was outside its calibrated range

    def with_(self, **changes: Any) -> Result:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The wire form sinks deliver: one flat JSON object (head, label, score, values, detail)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self.HEAD}
        out["label"] = self.label
        out["score"] = self.score
        out.update(self.values)
        out.update(self.detail)
        return out

    def to_row(self) -> dict[str, Any]:
        """The stored form (outbox): nested, so `from_row` rebuilds the same object."""
        return {
            **{name: getattr(self, name) for name in self.HEAD},
            "label": self.label,
            "score": self.score,
            "values": dict(self.values),
            "detail": dict(self.detail),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Result:
        return cls(
            pipeline=str(row["pipeline"]),
            stream=str(row.get("stream", "")),
            t_ns=int(row["t_ns"]),
            decision=str(row.get("decision", "")),
            label=row.get("label"),
            score=row.get("score"),
            values=dict(row.get("values") or {}),
            detail=dict(row.get("detail") or {}),
            seq=int(row.get("seq", 0)),
            latency_ns=int(row.get("latency_ns", 0)),
            model=str(row.get("model", "")),
            quality=row.get("quality", "good"),
        )


class Stats(Counter[str]):
    """Named counters a component keeps (errors, drops, reconnects); the service exports them as metrics."""


class Source(Protocol):
    """A machine feed. `stream()` yields until the connection is lost, then raises; `supervise` reopens it.

    Example::

        class Thermometer:
            name = "oven1"
            stats = Stats()
            async def open(self) -> None: ...
            async def stream(self) -> AsyncIterator[Sample]:
                while True:
                    yield Reading("oven1.temp", now_ns(), np.float32(await self._read()))
            async def close(self) -> None: ...

    A source may also offer a synchronous `abort()` (not part of the protocol's required methods): the service
    calls it at a stop, before it cancels the source's task, to drop connections at once (the Modbus source does:
    an answer already in the socket is then never read). It must not await anything.
    """

    name: str
    stats: Stats

    async def open(self) -> None: ...

    def stream(self) -> AsyncIterator[Sample]: ...

    async def close(self) -> None: ...


@runtime_checkable
class BatchSource(Source, Protocol):
    """A source whose samples arrive in groups: one Modbus response carries tens of tags read at one instant.

    `batches()` hands each group over in one step, so the per-sample cost of an async generator step and an awaited
    hand-over is paid once per group (at 50k tags/s those steps cost as much CPU as pymodbus itself). `stream()`
    still yields the same samples one by one, in the same order; `supervise` prefers `batches()` when its caller
    can take them.
    """

    def batches(self) -> AsyncIterator[Sequence[Sample]]: ...


class Sink(Protocol):
    """A destination for results. `deliver` returns only once delivery is confirmed, else raises DeliveryError."""

    name: str
    stats: Stats

    async def open(self) -> None: ...

    async def deliver(self, result: Result) -> None: ...

    async def close(self) -> None: ...
