"""Sparkplug B configuration: the edge-node sink (sink kind `sparkplug`) and the consumer source (device kind
`sparkplug`). Validation never touches the network."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from adapters.base import DeviceConfigBase, SinkConfigBase
from adapters.mqtt.config import MqttConnectionConfig

__all__ = ["SparkplugConfig", "SparkplugSinkConfig", "check_id"]

# Sparkplug ids are topic levels: no '/', '+' or '#'
_ID_RE = re.compile(r"^[^/+#]+$")


def check_id(v: str) -> str:
    if not _ID_RE.match(v):
        raise ValueError(f"{v!r}: a Sparkplug id is one topic level (no '/', '+' or '#')")
    return v


class _SparkplugConnection(MqttConnectionConfig):
    group_id: str = Field(description="Sparkplug group id (the second topic level, e.g. the plant or area).")

    @field_validator("group_id")
    @classmethod
    def _check_group(cls, v: str) -> str:
        return check_id(v)

    @model_validator(mode="after")
    def _no_status_topic(self) -> _SparkplugConnection:
        if self.status_topic is not None:
            raise ValueError("status_topic: Sparkplug announces the node with NBIRTH/NDEATH; leave it unset")
        return self


class SparkplugSinkConfig(_SparkplugConnection, SinkConfigBase):
    """An edge node: results as DDATA of one Sparkplug device per pipeline, with NBIRTH/NDEATH and DBIRTH."""

    kind: Literal["sparkplug"] = Field(description="Sink kind.")
    edge_node_id: str = Field(description="Edge node id (the fourth topic level), unique within the group.")
    qos: Literal[0, 1] = Field(
        default=1,
        description="QoS of NBIRTH, DBIRTH and DDATA. The specification uses 0; 1 (the default) lets the outbox "
        "delete a result only once the broker acknowledged it. The NDEATH will is QoS 1 either way.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="How long `deliver` waits for the acknowledgement.")

    @field_validator("edge_node_id")
    @classmethod
    def _check_node(cls, v: str) -> str:
        return check_id(v)


class SparkplugConfig(_SparkplugConnection, DeviceConfigBase):
    """Readings from Sparkplug edge nodes that already publish: NDATA/DDATA metrics decoded by their birth
    certificates (names, aliases, types)."""

    kind: Literal["sparkplug"] = Field(description="Device kind.")
    edge_node_id: str = Field(
        default="+", description="Edge node to follow, or `+` for every node of the group (one topic level)."
    )
    queue_size: int = Field(
        default=1000, ge=1, description="Messages held between paho's thread and the pipeline; overflow is dropped."
    )
    rebirth_on_unknown_alias: bool = Field(
        default=True,
        description="Ask the node for a rebirth (NCMD `Node Control/Rebirth`) when data names an alias or device "
        "whose birth certificate was missed (e.g. after joining late).",
    )

    @field_validator("edge_node_id")
    @classmethod
    def _check_node(cls, v: str) -> str:
        return v if v == "+" else check_id(v)

    def stream_prefixes(self) -> list[str]:
        """Streams are `{id}.{edge node}.{device or 'node'}.{metric}` (metric '/' becomes '.')."""
        return [self.id]
