"""MQTT configuration: broker connection, subscriptions (device kind `mqtt`) and the result sink (sink kind `mqtt`).

Validation never touches the network: an unreachable broker fails when the component opens.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.base import DeviceConfigBase, SinkConfigBase, StrictModel
from adapters.types import Host, Port, QueueSize, RateHz

__all__ = [
    "MqttConfig",
    "MqttConnectionConfig",
    "MqttSinkConfig",
    "MqttSubscription",
    "check_template",
    "check_topic_filter",
]

_LEVEL_RE = re.compile(r"^[^+#]*$")


def check_topic_filter(topic: str) -> str:
    """MQTT filter rules: `+` fills a whole level, `#` only as the whole last level."""
    if not topic:
        raise ValueError("topic must not be empty")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if level in ("+", "#"):
            if level == "#" and i != len(levels) - 1:
                raise ValueError(f"'#' must be the last level: {topic!r}")
        elif not _LEVEL_RE.match(level):
            raise ValueError(f"'+' and '#' must fill a whole level: {topic!r}")
    return topic


def check_template(template: str, fields: Mapping[str, object], what: str) -> str:
    """A `str.format` template that only uses `fields`, checked once at load so formatting never fails later."""
    try:
        for _, name, _, _ in string.Formatter().parse(template):
            if name is not None and ("." in name or ("[" in name and not re.fullmatch(r"\w+\[\d+\]", name))):
                raise ValueError(f"field {{{name}}}: only plain fields and levels[N] are allowed")
        template.format_map(fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(f"bad {what} template {template!r}: {exc!r}; allowed fields: {sorted(fields)}") from exc
    return template


class MqttConnectionConfig(StrictModel):
    """Broker connection options shared by the source, the sink and the simulated gateway."""

    id: str = Field(description="Component id; also the `{id}` in stream and topic templates.", min_length=1)
    host: Host = Field(default="127.0.0.1", description="Broker host name or address.")
    port: Port = Field(default=1883, description="Broker TCP port (8883 is usual with TLS).")
    client_id: str = Field(
        default="", description="MQTT client id; empty lets the broker assign one. Must be unique per broker."
    )
    username: str | None = Field(default=None, description="User name, if the broker requires one.")
    password: SecretStr | None = Field(default=None, description="Password; use `${ENV_NAME}` in the file.")
    tls_ca_file: Path | None = Field(
        default=None, description="CA certificate (PEM) that signed the broker's certificate; enables TLS."
    )
    tls_cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM) for brokers that require one; needs `tls_key_file`."
    )
    tls_key_file: Path | None = Field(default=None, description="Private key (PEM) of `tls_cert_file`.")
    tls_check_hostname: bool = Field(
        default=True,
        description="Check that the broker's certificate names `host`; turn off only for a broker addressed by an "
        "IP its certificate does not list.",
    )
    status_topic: str | None = Field(
        default=None,
        description="Retained online/offline topic (template `{id}`): `status_online` is published on every "
        "connect, `status_offline` is the last will (sent by the broker when the connection is lost) and is "
        "also sent on a clean close.",
    )
    status_online: str = Field(default="online", description="Payload of `status_topic` while connected.")
    status_offline: str = Field(default="offline", description="Payload of `status_topic` (last will) when gone.")
    keepalive_s: int = Field(default=30, ge=5, le=65535, description="MQTT keep-alive: ping after this idle time.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="How long `open()` waits for the first CONNACK before failing."
    )
    reconnect_min_s: float = Field(default=1.0, gt=0, description="First reconnect delay after a lost connection.")
    reconnect_max_s: float = Field(
        default=30.0, gt=0, description="Ceiling of the doubling reconnect delay (paho's back-off)."
    )

    @model_validator(mode="after")
    def _reconnect_order(self) -> MqttConnectionConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_cert_file is not None and self.tls_ca_file is None:
            raise ValueError("a client certificate needs TLS: set tls_ca_file too")
        return self

    @field_validator("status_topic")
    @classmethod
    def _check_status_topic(cls, v: str | None) -> str | None:
        if v is not None:
            check_template(v, {"id": "x"}, "status_topic")
            if "+" in v or "#" in v:
                raise ValueError("a publish topic must not contain '+' or '#'")
        return v

    def status_topic_name(self) -> str | None:
        return None if self.status_topic is None else self.status_topic.format(id=self.id)


_STREAM_FIELDS: dict[str, object] = {
    "id": "dev",
    "topic": "a.b.c",
    "topic_leaf": "c",
    "levels": ["l"] * 32,
}


class MqttSubscription(StrictModel):
    """One topic filter and how its payloads become readings."""

    topic: str = Field(description="Topic filter; `+` matches one level, `#` the rest (e.g. `plant/+/vib`).")
    codec: Literal["json", "f32le"] = Field(
        default="json", description="`json` (number or document) or `f32le` (raw little-endian float32 block)."
    )
    stream: str = Field(
        default="{id}.{topic_leaf}",
        description=(
            "Stream name, or a template with `{id}` (device id), `{topic}` (levels joined by '.'), "
            "`{topic_leaf}` (last level), `{levels[N]}` (level N from 0)."
        ),
    )
    unit: str = Field(default="", description="Unit of the values unless the payload names one (e.g. `g`, `degC`).")
    rate_hz: RateHz | None = Field(
        default=None, description="Sample rate of waveform blocks when the message does not carry one."
    )
    qos: Literal[0, 1, 2] = Field(default=0, description="Subscription QoS (0 suits high-rate waveform blocks).")

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, v: str) -> str:
        return check_topic_filter(v)

    @field_validator("stream")
    @classmethod
    def _check_stream(cls, v: str) -> str:
        return check_template(v, _STREAM_FIELDS, "stream")

    def stream_name(self, device_id: str, topic: str) -> str:
        """The stream a message on `topic` becomes; IndexError if the template names a level the topic lacks."""
        levels = topic.split("/")
        return self.stream.format(id=device_id, topic=".".join(levels), topic_leaf=levels[-1], levels=levels)


class MqttConfig(MqttConnectionConfig, DeviceConfigBase):
    """A device (or gateway) that publishes readings to an MQTT broker."""

    kind: Literal["mqtt"] = Field(description="Device kind.")
    subscriptions: list[MqttSubscription] = Field(
        min_length=1, description="Topic filters to subscribe to, each with its codec and stream naming."
    )
    queue_size: QueueSize = Field(
        default=1000, description="Messages held between paho's thread and the pipeline; overflow is dropped."
    )

    def stream_prefixes(self) -> list[str]:
        """The device id, plus the first dotted part of each stream template that does not start with `{id}`
        (e.g. `line1` for `line1.{topic_leaf}`), or `*` when that part is itself templated (`{levels[1]}.vib`)."""
        prefixes = [self.id]
        for sub in self.subscriptions:
            if not sub.stream.startswith("{id}"):
                first = sub.stream.split(".", 1)[0]
                prefixes.append("*" if "{" in first else first)
        return list(dict.fromkeys(prefixes))


_SINK_FIELDS: dict[str, object] = {"id": "sink", "pipeline": "p"}


class MqttSinkConfig(MqttConnectionConfig, SinkConfigBase):
    """Publishes each result as one JSON message and confirms it with the broker's acknowledgement."""

    kind: Literal["mqtt"] = Field(description="Sink kind.")
    topic: str = Field(
        default="edge/{pipeline}/result", description="Topic template; fields `{pipeline}` and `{id}` (sink id)."
    )
    qos: Literal[1, 2] = Field(default=1, description="Publish QoS; 1 or 2, since delivery must be acknowledged.")
    retain: bool = Field(default=False, description="Ask the broker to retain the last result per topic.")
    timeout_s: float = Field(
        default=10.0, gt=0, description="How long `deliver` waits for the acknowledgement before failing."
    )
    max_inflight: int = Field(
        default=20, ge=1, le=65535, description="Publishes awaiting acknowledgement at once (paho queue bound)."
    )

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, v: str) -> str:
        check_template(v, _SINK_FIELDS, "topic")
        if "+" in v or "#" in v:
            raise ValueError("a publish topic must not contain '+' or '#'")
        return v
