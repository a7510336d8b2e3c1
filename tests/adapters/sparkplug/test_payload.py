"""The `.proto` against the specification's field numbers, and the committed generated module against it."""

from __future__ import annotations

import struct

import pytest
from google.protobuf import descriptor_pb2

from adapters.sparkplug import payload

from .common import compile_proto, decode


def test_committed_module_is_generated_from_the_proto() -> None:
    """`sparkplug_b_pb2.py` must describe exactly `sparkplug_b.proto` (regenerate it after editing the schema)."""
    committed = descriptor_pb2.FileDescriptorProto.FromString(payload.pb.DESCRIPTOR.serialized_pb)
    fresh = compile_proto()
    for message in [*fresh.message_type]:  # protoc adds json_name to a descriptor set, not to Python gencode
        _drop_json_names(message)
    assert committed == fresh


def _drop_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for f in message.field:
        f.ClearField("json_name")
    for nested in message.nested_type:
        _drop_json_names(nested)


def test_wire_layout_matches_the_specification() -> None:
    """Bytes laid out by hand from the Sparkplug B field numbers decode as the spec says (a wrong number in the
    `.proto` would shift them): Payload timestamp=1, metrics=2, seq=3; Metric name=1, alias=2, timestamp=3,
    datatype=4, is_historical=5, long_value=11, double_value=13."""
    metric = (
        b"\x0a\x01x"  # name "x"
        b"\x10\x07"  # alias 7
        b"\x18\x2a"  # timestamp 42
        b"\x20\x0a"  # datatype 10 (Double)
        b"\x28\x01"  # is_historical
        b"\x69" + struct.pack("<d", 2.5)  # double_value: field 13, wire type 1 (64-bit)
    )
    data = b"\x08\x64" + b"\x12" + bytes([len(metric)]) + metric + b"\x18\xff\x01"  # timestamp 100, seq 255
    p = decode(data)
    assert (p.timestamp, p.seq) == (100, 255)
    (m,) = p.metrics
    assert (m.name, m.alias, m.timestamp, m.datatype, m.is_historical, m.double_value) == ("x", 7, 42, 10, True, 2.5)
    # and the product's encoder lays it out the same way
    ours = payload.encode(
        [payload.Metric("x", 7, payload.DOUBLE, 2.5, timestamp_ms=42, is_historical=True)], timestamp_ms=100, seq=255
    )
    assert decode(ours) == p


def test_signed_values_round_trip() -> None:
    data = payload.encode([payload.Metric("t", None, payload.INT64, -5)], timestamp_ms=1, seq=0)
    assert payload.decode(data).metrics[0].value == -5
    assert decode(data).metrics[0].long_value == 2**64 - 5  # two's complement in uint64, as the spec says


def test_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        payload.decode(b"\xff\xff\xff")
