"""MQTT source, sink and simulated gateway against a real mosquitto on loopback."""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from helpers.mosquitto import Mosquitto
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from adapters.base import AdapterError, DeliveryError, Reading, Sink, Source
from adapters.mqtt import (
    MqttConfig,
    MqttSink,
    MqttSinkConfig,
    MqttSource,
    MqttSubscription,
    decode_f32le,
    encode_f32le,
    encode_json,
)

REPO = Path(__file__).resolve().parents[2]
CWRU = REPO.parent / "shared" / "datasets" / "cwru_bearing"


async def until(cond: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll until `cond()` holds; generous deadline for a loaded 2-core box."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextmanager
def raw_client(port: int, topic: str | None = None) -> Iterator[tuple[paho.Client, queue.Queue[paho.MQTTMessage]]]:
    """A plain paho client (subscribed to `topic` if given), to check what goes over the wire."""
    received: queue.Queue[paho.MQTTMessage] = queue.Queue()
    subscribed = queue.Queue[int]()
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)

    def on_connect(c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        if topic is not None:
            c.subscribe(topic, qos=1)
        else:
            subscribed.put(0)

    client.on_connect = on_connect
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(mid)
    client.on_message = lambda c, u, msg: received.put(msg)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        subscribed.get(timeout=20)
        yield client, received
    finally:
        client.disconnect()
        client.loop_stop()


async def next_reading(it: AsyncIterator[Reading], timeout_s: float = 20.0) -> Reading:
    return await asyncio.wait_for(anext(it), timeout_s)


@asynccontextmanager
async def opened(component: Any) -> AsyncIterator[Any]:
    await component.open()
    try:
        yield component
    finally:
        await component.close()


def source_config(port: int, *subs: dict[str, Any], **extra: Any) -> MqttConfig:
    return MqttConfig.model_validate(
        {"kind": "mqtt", "id": "gw", "port": port, "subscriptions": list(subs), "reconnect_max_s": 2.0, **extra}
    )


def sink_config(port: int, **extra: Any) -> MqttSinkConfig:
    return MqttSinkConfig.model_validate(
        {"kind": "mqtt", "id": "out", "port": port, "timeout_s": 2.0, "reconnect_max_s": 2.0, **extra}
    )


def props(**pairs: str) -> Properties:
    p = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    p.UserProperty = list(pairs.items())
    return p


# ------------------------------------------------------------------------------------------- config


def test_protocols_are_implemented() -> None:
    assert isinstance(MqttSource(source_config(1883, {"topic": "a/#"})), Source)
    assert isinstance(MqttSink(sink_config(1883)), Sink)


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


def test_password_is_secret() -> None:
    cfg = sink_config(1883, username="u", password="hunter2")
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in cfg.model_dump_json()


# ------------------------------------------------------------------------------------------- codecs


@given(arrays(np.float32, st.integers(1, 4096)))
def test_f32le_round_trip(samples: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    payload = encode_f32le(samples)
    assert len(payload) == 4 * samples.size
    out = decode_f32le(payload)
    assert out.dtype == np.float32
    assert out.flags.writeable
    np.testing.assert_array_equal(out.view(np.uint32), samples.view(np.uint32))  # bit-exact, NaNs included


@given(st.binary(min_size=0, max_size=64).filter(lambda b: len(b) % 4 != 0 or not b))
def test_f32le_rejects_partial_floats(payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_f32le(payload)


def test_encode_json_handles_numpy() -> None:
    doc = {
        "seq": np.int64(7),
        "score": np.float32(0.5),
        "scores": np.array([0.25, np.nan], dtype=np.float32),
        "ok": np.bool_(True),
        "inf": float("inf"),
        "nested": [{"v": np.arange(3, dtype=np.int16)}],
    }
    assert json.loads(encode_json(doc)) == {
        "seq": 7,
        "score": 0.5,
        "scores": [0.25, None],
        "ok": True,
        "inf": None,
        "nested": [{"v": [0, 1, 2]}],
    }


# ------------------------------------------------------------------------------------------- sink


async def test_sink_delivers_json_with_qos1(mosquitto: Mosquitto) -> None:
    with raw_client(mosquitto.port, "edge/#") as (_, received):
        async with opened(MqttSink(sink_config(mosquitto.port))) as sink:
            result = {"pipeline": "bearings", "seq": np.int64(3), "scores": np.array([0.1, 0.9], np.float32)}
            await sink.deliver(result)
            msg = await asyncio.to_thread(received.get, timeout=20)
            assert sink.stats["delivered"] == 1
    assert msg.topic == "edge/bearings/result"
    assert msg.qos == 1
    assert not msg.retain
    doc = json.loads(msg.payload)
    assert doc["pipeline"] == "bearings"
    assert doc["seq"] == 3
    assert doc["scores"] == pytest.approx([0.1, 0.9])


async def test_sink_fails_fast_while_broker_is_down_and_recovers(mosquitto: Mosquitto) -> None:
    async with opened(MqttSink(sink_config(mosquitto.port))) as sink:
        await sink.deliver({"pipeline": "p", "seq": 1})
        mosquitto.stop()
        await until(lambda: sink.stats["disconnects"] == 1, what="disconnect noticed")
        with pytest.raises(DeliveryError):
            await sink.deliver({"pipeline": "p", "seq": 2})
        assert sink.stats["refused_disconnected"] >= 1
        mosquitto.start()
        with raw_client(mosquitto.port, "edge/#") as (_, received):
            for _attempt in range(200):
                try:
                    await sink.deliver({"pipeline": "p", "seq": 2})
                    break
                except DeliveryError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("sink did not recover after the broker restarted")
            seqs = set()
            while 2 not in seqs:
                msg = await asyncio.to_thread(received.get, timeout=20)
                seqs.add(json.loads(msg.payload)["seq"])
        assert sink.stats["connects"] == 2


async def test_sink_open_fails_when_no_broker(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    sink = MqttSink(sink_config(mosquitto.port, connect_timeout_s=1.0))
    with pytest.raises(AdapterError):
        await sink.open()
    with pytest.raises(DeliveryError):
        await sink.deliver({"pipeline": "p", "seq": 1})
    await sink.close()
