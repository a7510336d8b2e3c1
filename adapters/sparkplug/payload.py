"""Sparkplug B topics and payloads: building metrics from Python values and reading them back.

The protobuf classes come from `sparkplug_b_pb2` (generated from `sparkplug_b.proto`, see the package docstring);
this module is the only one that touches them, so the sink and the source deal in plain values.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

# generated code without type stubs: typed here, at its one point of use
pb: Any = importlib.import_module("adapters.sparkplug.sparkplug_b_pb2")

__all__ = [
    "BOOLEAN",
    "DOUBLE",
    "INT64",
    "NAMESPACE",
    "REBIRTH",
    "STRING",
    "UINT64",
    "Metric",
    "decode",
    "encode",
    "topic",
]

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"

INT64: int = pb.Int64
UINT64: int = pb.UInt64
DOUBLE: int = pb.Double
BOOLEAN: int = pb.Boolean
STRING: int = pb.String

_INT_TYPES: set[int] = {pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32}
_LONG_TYPES: set[int] = {pb.Int64, pb.UInt64, pb.DateTime}
_SIGNED_BITS: dict[int, int] = {pb.Int8: 8, pb.Int16: 16, pb.Int32: 32, pb.Int64: 64}


def topic(group: str, message_type: str, node: str, device: str | None = None) -> str:
    """`spBv1.0/{group}/{type}/{node}[/{device}]`."""
    return f"{NAMESPACE}/{group}/{message_type}/{node}" + (f"/{device}" if device is not None else "")


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric as plain values. `name` or `alias` (or both) identify it; `value` None is a null."""

    name: str | None
    alias: int | None
    datatype: int
    value: Any
    timestamp_ms: int | None = None
    is_historical: bool = False


def _set_value(m: Any, datatype: int, value: Any) -> None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        m.is_null = True
    elif datatype in _INT_TYPES:
        m.int_value = int(value) & 0xFFFFFFFF  # signed values travel two's-complement in uint32
    elif datatype in _LONG_TYPES:
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == pb.Float:
        m.float_value = float(value)
    elif datatype == pb.Double:
        m.double_value = float(value)
    elif datatype == pb.Boolean:
        m.boolean_value = bool(value)
    elif datatype in (pb.String, pb.Text, pb.UUID):
        m.string_value = str(value)
    elif datatype == pb.Bytes:
        m.bytes_value = bytes(value)
    else:
        raise ValueError(f"Sparkplug datatype {datatype} is not supported here")


def encode(metrics: list[Metric], *, timestamp_ms: int, seq: int | None) -> bytes:
    """A serialized `Payload`; `seq` None leaves it out (NDEATH has none)."""
    payload = pb.Payload(timestamp=timestamp_ms)
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        m = payload.metrics.add()
        if metric.name is not None:
            m.name = metric.name
        if metric.alias is not None:
            m.alias = metric.alias
        m.datatype = metric.datatype
        if metric.timestamp_ms is not None:
            m.timestamp = metric.timestamp_ms
        if metric.is_historical:
            m.is_historical = True
        _set_value(m, metric.datatype, metric.value)
    return bytes(payload.SerializeToString())


def _get_value(m: Any, datatype: int) -> Any:
    if m.is_null:
        return None
    which = m.WhichOneof("value")
    if which is None:
        return None
    value = getattr(m, which)
    if which == "int_value" and datatype in _SIGNED_BITS and value >= 1 << 31:
        value -= 1 << 32
    elif which == "long_value" and datatype in _SIGNED_BITS and value >= 1 << 63:
        value -= 1 << 64
    elif which in ("dataset_value", "template_value", "extension_value"):
        raise ValueError(f"metric {m.name or m.alias}: {which} is not supported here")
    return value


@dataclass(frozen=True, slots=True)
class Decoded:
    timestamp_ms: int | None
    seq: int | None
    metrics: list[Metric]


def decode(data: bytes, datatypes: dict[int, int] | None = None) -> Decoded:
    """A payload's metrics; `datatypes` (alias -> datatype from the birth) fills types DDATA leaves out.
    Raises ValueError on bytes that are not a Sparkplug B payload."""
    try:
        payload = pb.Payload.FromString(data)
    except Exception as exc:  # protobuf's DecodeError does not derive from ValueError
        raise ValueError(f"not a Sparkplug B payload: {exc}") from exc
    out = []
    for m in payload.metrics:
        alias = m.alias if m.HasField("alias") else None
        datatype = m.datatype if m.HasField("datatype") else (datatypes or {}).get(alias or -1, pb.Unknown)
        out.append(
            Metric(
                name=m.name if m.HasField("name") else None,
                alias=alias,
                datatype=datatype,
                value=_get_value(m, datatype),
                timestamp_ms=m.timestamp if m.HasField("timestamp") else None,
                is_historical=m.is_historical,
            )
        )
    return Decoded(
        payload.timestamp if payload.HasField("timestamp") else None,
        payload.seq if payload.HasField("seq") else None,
        out,
    )
