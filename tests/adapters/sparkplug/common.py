"""Helpers of the Sparkplug tests: an independent decoder compiled from the `.proto` by the test itself."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from adapters.sparkplug.config import SparkplugConfig, SparkplugSinkConfig

REPO = Path(__file__).resolve().parents[3]
PROTO = REPO / "adapters" / "sparkplug" / "sparkplug_b.proto"


def compile_proto() -> descriptor_pb2.FileDescriptorProto:
    """`sparkplug_b.proto` compiled by protoc (grpc_tools) into a descriptor, without the sink's module."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", str(PROTO)])
        assert rc == 0, f"protoc failed on {PROTO}"
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = files.file
    return file


@cache
def Payload() -> Any:
    """The `Payload` message class in a pool of its own: nothing shared with `adapters.sparkplug`."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(compile_proto())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload"))


def decode(data: bytes) -> Any:
    return Payload().FromString(data)


def rebirth_command() -> bytes:
    p = Payload()(timestamp=1)
    m = p.metrics.add()
    m.name = "Node Control/Rebirth"
    m.datatype = 11  # Boolean
    m.boolean_value = True
    return bytes(p.SerializeToString())


def metrics_by_name(payload: Any) -> dict[str, Any]:
    return {m.name: m for m in payload.metrics}


def value(m: Any) -> Any:
    return None if m.is_null else getattr(m, m.WhichOneof("value"))


def sink_config(port: int, **extra: Any) -> SparkplugSinkConfig:
    return SparkplugSinkConfig.model_validate(
        {
            "kind": "sparkplug",
            "id": "scada",
            "port": port,
            "group_id": "plant1",
            "edge_node_id": "line1-edge",
            "timeout_s": 5.0,
            "reconnect_max_s": 1.0,
            **extra,
        }
    )


def source_config(port: int, **extra: Any) -> SparkplugConfig:
    return SparkplugConfig.model_validate(
        {"kind": "sparkplug", "id": "sp", "port": port, "group_id": "plant1", "reconnect_max_s": 1.0, **extra}
    )
