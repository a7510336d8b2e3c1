"""Sparkplug B over MQTT: the service as an edge node publishing results (sink kind `sparkplug`), and a source
of readings from edge nodes that already publish Sparkplug (device kind `sparkplug`).

Modules: `config` (pydantic models), `payload` (topics, encoding and decoding metrics), `sink` (`SparkplugSink`),
`source` (`SparkplugSource`). The MQTT session is `adapters.mqtt.connection.Connection` (TLS, user name and
password, reconnects), the same as the plain MQTT components. Only `config` loads with the registry; paho and
protobuf are imported when a component opens.

The payload schema is `sparkplug_b.proto` (Eclipse Sparkplug B, package `org.eclipse.tahu.protobuf`), written
out from the specification. `sparkplug_b_pb2.py` is generated from it with `grpc_tools.protoc` and committed:
a gateway then needs only the `protobuf` runtime, not a compiler or a build step; a test regenerates it and
checks that the committed module describes the same schema. Regenerate after editing the `.proto`:

    .venv/bin/python -m grpc_tools.protoc -Iadapters/sparkplug --python_out=adapters/sparkplug \\
        adapters/sparkplug/sparkplug_b.proto

See docs/sparkplug.md.
"""

from __future__ import annotations

from adapters.registry import Kind
from adapters.sparkplug.config import SparkplugConfig, SparkplugSinkConfig

__all__ = ["KINDS"]

KINDS = (
    Kind("sparkplug", "device", SparkplugConfig, component="adapters.sparkplug.source:SparkplugSource"),
    Kind("sparkplug", "sink", SparkplugSinkConfig, component="adapters.sparkplug.sink:SparkplugSink"),
)
