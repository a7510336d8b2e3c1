"""MQTT configuration (adapters.mqtt.config) and the package's registered kinds."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import adapters.mqtt
from adapters import registry
from adapters.base import Sink, Source
from adapters.mqtt.config import MqttConfig, MqttSubscription
from adapters.mqtt.sink import MqttSink
from adapters.mqtt.source import MqttSource

from .common import PROFILE, sink_config, source_config


@pytest.mark.parametrize(
    "sub",
    [
        {"topic": "a/#/b"},
        {"topic": "a/b+"},
        {"topic": ""},
        {"topic": "a/b", "stream": "{nope}"},
        {"topic": "a/b", "codec": "f64be"},
        {"topic": "a/b", "rate_hz": 0},
    ],
)
def test_bad_subscription_is_rejected(sub: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MqttSubscription.model_validate(sub)


def test_sink_topic_template_is_checked() -> None:
    with pytest.raises(ValidationError):
        sink_config(1883, topic="edge/{machine}/result")
    with pytest.raises(ValidationError):
        sink_config(1883, topic="edge/+/result")
    with pytest.raises(ValidationError):
        sink_config(1883, qos=0)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"tls_ca_file": "ca.crt", "tls_cert_file": "c.crt"}, "go together"),
        ({"tls_cert_file": "c.crt", "tls_key_file": "c.key"}, "needs TLS"),
        ({"status_topic": "plant/+/status"}, "must not contain"),
        ({"status_topic": "plant/{machine}/status"}, "bad status_topic template"),
    ],
)
def test_tls_and_status_options_are_checked(extra: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        sink_config(1883, **extra)
    with pytest.raises(ValidationError, match=why):
        source_config(1883, {"topic": "a/b"}, **extra)


def test_password_is_secret() -> None:
    cfg = sink_config(1883, username="u", password="hunter2")
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in cfg.model_dump_json()


def test_gateway_profile_is_a_valid_mqtt_device() -> None:
    """The device profile holds MqttConfig fields; a deployment adds the connection and the id."""
    profile = yaml.safe_load(PROFILE.read_text())
    cfg = MqttConfig.model_validate({"kind": "mqtt", "id": "gw1", **profile})
    assert [s.codec for s in cfg.subscriptions] == ["f32le"]
    assert (
        cfg.subscriptions[0].stream.format(id="gw1", topic="", topic_leaf="vib", levels=["plant", "line1", "m3", "vib"])
        == "gw1.m3.vib"
    )
    assert cfg.subscriptions[0].stream_name("gw1", "plant/line1/m3/vib") == "gw1.m3.vib"


def test_stream_prefixes_name_every_stream_a_device_can_produce() -> None:
    """What the deployment's cross-check matches pipeline inputs against: the id, fixed prefixes, or `*`."""
    cfg = source_config(
        1883,
        {"topic": "a/+"},  # {id}.{topic_leaf}: covered by the id
        {"topic": "b/+", "stream": "line1.{topic_leaf}"},
        {"topic": "c/+", "stream": "line1.c.{topic_leaf}"},  # same prefix, listed once
        {"topic": "d/+/vib", "stream": "{levels[1]}.vib"},  # the prefix is the topic's: anything
    )
    assert cfg.stream_prefixes() == ["gw", "line1", "*"]
    assert source_config(1883, {"topic": "a"}).stream_prefixes() == ["gw"]


def test_registered_kinds_build_the_components() -> None:
    """The registry's refs resolve: a typo in `module:Class` would only show when a deployment starts."""
    kinds = {(k.role, k.name): k for k in adapters.mqtt.KINDS}
    assert set(kinds) == {("device", "mqtt"), ("sink", "mqtt")}
    source: Source = registry.make_source(source_config(1883, {"topic": "a/#"}))
    sink: Sink = registry.make_sink(sink_config(1883))
    assert type(source) is MqttSource and source.name == "gw"
    assert type(sink) is MqttSink and sink.name == "out"
    assert registry.simulator(source_config(1883, {"topic": "a/#"})) is not None


def test_validation_does_not_load_paho() -> None:
    """`validate` stays fast: only the config module loads with the registry, paho when a component opens."""
    code = "import sys, adapters.mqtt; assert not any(m.startswith('paho') for m in sys.modules), 'paho loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
