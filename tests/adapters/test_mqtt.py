"""MQTT source, sink and simulated gateway against a real mosquitto on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import queue
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from time import time_ns
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from adapters.base import AdapterError, DeliveryError, Reading, Sink, Source
from adapters.mqtt import (
    GatewayStream,
    MqttConfig,
    MqttSink,
    MqttSinkConfig,
    MqttSource,
    MqttSubscription,
    Recording,
    VibrationGatewayConfig,
    VibrationGatewaySimulator,
    decode_f32le,
    encode_f32le,
    encode_json,
    load_recording,
    simulate_gateway,
)
from tests.helpers import until
from tests.helpers.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parents[2]
CWRU = REPO.parent / "shared" / "datasets" / "cwru_bearing"


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


# ------------------------------------------------------------------------------------------- source


async def test_source_decodes_json_numbers_and_documents(mosquitto: Mosquitto) -> None:
    cfg = source_config(mosquitto.port, {"topic": "plant/+/temp", "unit": "degC", "stream": "{id}.{levels[1]}.temp"})
    async with opened(MqttSource(cfg)) as source:
        it = source.stream()
        with raw_client(mosquitto.port) as (pub, _):
            pub.publish("plant/oven1/temp", b"21.5", qos=1).wait_for_publish(20)
            r = await next_reading(it)
            assert (r.stream, r.unit, r.quality, r.rate_hz) == ("gw.oven1.temp", "degC", "good", None)
            assert r.value.shape == ()
            assert float(r.value) == 21.5
            assert abs(r.t_ns - time_ns()) < 60 * 10**9  # stamped on arrival: a plausible epoch, not zero

            doc = {"value": -3.25, "t_ns": 1_700_000_000_123_456_789, "quality": "uncertain", "unit": "K"}
            pub.publish("plant/oven2/temp", json.dumps(doc), qos=1).wait_for_publish(20)
            r = await next_reading(it)
            assert (r.stream, r.t_ns, r.quality, r.unit, float(r.value)) == (
                "gw.oven2.temp",
                1_700_000_000_123_456_789,
                "uncertain",
                "K",
                -3.25,
            )

            block = {"value": [0.5, -0.5, 1.0], "ts": 1700000000.5, "rate_hz": 100}
            pub.publish("plant/fan/temp", json.dumps(block), qos=1).wait_for_publish(20)
            r = await next_reading(it)
            assert r.value.shape == (3,)
            np.testing.assert_array_equal(r.value, [0.5, -0.5, 1.0])
            assert r.rate_hz == 100.0
            assert r.t_ns == 1_700_000_000_500_000_000
        await it.aclose()
    assert source.stats["readings"] == 3


async def test_source_decodes_f32le_blocks(mosquitto: Mosquitto) -> None:
    cfg = source_config(
        mosquitto.port,
        {"topic": "plant/line1/+/vib", "codec": "f32le", "stream": "line1.{levels[2]}.vib", "unit": "g"},
        {"topic": "legacy/vib", "codec": "f32le", "rate_hz": 2560},
    )
    samples = np.sin(np.arange(1200, dtype=np.float32) / 7).astype(np.float32)
    async with opened(MqttSource(cfg)) as source:
        it = source.stream()
        with raw_client(mosquitto.port) as (pub, _):
            t0 = 1_700_000_000_000_000_000
            pub.publish(
                "plant/line1/motor3/vib", encode_f32le(samples), qos=1, properties=props(rate_hz="12000", t0_ns=str(t0))
            ).wait_for_publish(20)
            r = await next_reading(it)
            assert (r.stream, r.rate_hz, r.t_ns, r.unit) == ("line1.motor3.vib", 12000.0, t0, "g")
            assert r.value.dtype == np.float32
            np.testing.assert_array_equal(r.value, samples)

            # no properties: the subscription's rate applies and the block is taken to end on arrival
            before = time_ns()
            pub.publish("legacy/vib", encode_f32le(samples[:256]), qos=1).wait_for_publish(20)
            r = await next_reading(it)
            assert (r.stream, r.rate_hz, r.value.shape) == ("gw.vib", 2560.0, (256,))
            assert r.t_ns <= time_ns() - 100_000_000  # 256 samples at 2560 Hz = 0.1 s before arrival
            assert r.t_ns >= before - 100_000_000 - 60 * 10**9
        await it.aclose()


async def test_malformed_payloads_are_counted_and_the_stream_continues(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.mqtt")
    cfg = source_config(
        mosquitto.port,
        {"topic": "j/#"},
        {"topic": "f/#", "codec": "f32le"},  # f/# has no default rate
    )
    bad: list[tuple[str, bytes, Properties | None]] = [
        ("j/a", b"{not json", None),
        ("j/a", b'"text"', None),
        ("j/a", b'{"value": [1, 2]}', None),  # a block without a rate
        ("j/a", b'{"value": 1, "quality": "excellent"}', None),
        ("j/a", b"\xff\xfe", None),
        ("f/a", b"\x00\x00\x80", props(rate_hz="100")),  # 3 bytes
        ("f/a", encode_f32le([1.0]), None),  # no rate anywhere
        ("f/a", encode_f32le([1.0]), props(rate_hz="fast")),
    ]
    async with opened(MqttSource(cfg)) as source:
        it = source.stream()
        with raw_client(mosquitto.port) as (pub, _):
            for topic, payload, p in bad:
                pub.publish(topic, payload, qos=1, properties=p).wait_for_publish(20)
            pub.publish("j/ok", b"42", qos=1).wait_for_publish(20)
            r = await next_reading(it)
        await it.aclose()
    assert float(r.value) == 42.0
    assert source.stats["malformed"] == len(bad)
    assert source.stats["readings"] == 1
    assert sum("event=mqtt_malformed" in m for m in caplog.messages) == 1  # once per burst, not per message


async def test_full_queue_drops_are_counted(mosquitto: Mosquitto) -> None:
    cfg = source_config(mosquitto.port, {"topic": "q/#", "qos": 1}, queue_size=2)
    async with opened(MqttSource(cfg)) as source:
        with raw_client(mosquitto.port) as (pub, _):
            for i in range(10):
                pub.publish("q/x", str(i), qos=1).wait_for_publish(20)
            await until(lambda: source.stats["dropped"] == 8, what="8 drops")
        it = source.stream()
        kept = [float((await next_reading(it)).value) for _ in range(2)]
        await it.aclose()
    assert kept == [0.0, 1.0]  # the oldest are kept; newer ones are dropped and counted


async def test_source_resumes_after_broker_restart(mosquitto: Mosquitto) -> None:
    cfg = source_config(mosquitto.port, {"topic": "plant/+/temp", "qos": 1})
    async with opened(MqttSource(cfg)) as source:
        it = source.stream()
        with raw_client(mosquitto.port) as (pub, _):
            pub.publish("plant/a/temp", b"1", qos=1).wait_for_publish(20)
            assert float((await next_reading(it)).value) == 1.0
        mosquitto.stop()
        await until(lambda: source.stats["disconnects"] == 1, what="disconnect noticed")
        mosquitto.start()  # a fresh broker: no session, so the subscriptions must be sent again
        await until(lambda: source.stats["connects"] == 2, what="reconnect")
        with raw_client(mosquitto.port) as (pub, _):
            pending: asyncio.Task[Reading] = asyncio.ensure_future(anext(it))
            for _attempt in range(200):  # resubscription races the first publishes: repeat until one arrives
                pub.publish("plant/a/temp", b"2", qos=1).wait_for_publish(20)
                done, _ = await asyncio.wait({pending}, timeout=0.1)
                if done:
                    break
            r = await asyncio.wait_for(pending, 20)
        await it.aclose()
    assert float(r.value) == 2.0


async def test_source_open_fails_when_no_broker(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    source = MqttSource(source_config(mosquitto.port, {"topic": "a"}, connect_timeout_s=1.0))
    with pytest.raises(AdapterError):
        await source.open()
    await source.close()


# ------------------------------------------------------------------------------------------- gateway simulator


async def collect(it: AsyncIterator[Reading], n: int) -> dict[str, list[Reading]]:
    by_stream: dict[str, list[Reading]] = {}
    for _ in range(n):
        r = await next_reading(it)
        by_stream.setdefault(r.stream, []).append(r)
    return by_stream


async def test_gateway_replays_in_memory_recordings_as_contiguous_blocks(mosquitto: Mosquitto) -> None:
    slow = Recording(np.arange(250, dtype=np.float32), 1000.0)  # 100-sample blocks: the 3rd wraps around
    fast = Recording(np.linspace(-1, 1, 48_000, dtype=np.float32), 48_000.0)
    gw_cfg = VibrationGatewayConfig(
        id="gw",
        port=mosquitto.port,
        streams=[GatewayStream(stream="m1"), GatewayStream(stream="m2")],
        block_s=0.1,
        speed=20.0,
    )
    src_cfg = source_config(mosquitto.port, {"topic": "plant/line1/+/vib", "codec": "f32le", "stream": "{levels[2]}"})
    async with (
        opened(MqttSource(src_cfg)) as source,
        opened(VibrationGatewaySimulator(gw_cfg, {"m1": slow, "m2": fast})) as gw,
    ):
        it = source.stream()
        task = asyncio.create_task(gw.run())
        try:
            got = await collect(it, 6)
            while min(len(v) for v in got.values()) < 3:
                for k, v in (await collect(it, 1)).items():
                    got.setdefault(k, []).extend(v)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await it.aclose()
    m1, m2 = got["m1"][:3], got["m2"][:3]
    assert all(r.rate_hz == 1000.0 and r.value.shape == (100,) and r.unit == "g" for r in m1)
    assert all(r.rate_hz == 48_000.0 and r.value.shape == (4800,) for r in m2)
    np.testing.assert_array_equal(m1[0].value, np.arange(100))
    np.testing.assert_array_equal(m1[2].value, np.r_[200:250, 0:50])  # looped
    np.testing.assert_array_equal(m2[1].value, fast.samples[4800:9600])
    for blocks in (m1, m2):
        steps = [b.t_ns - a.t_ns for a, b in itertools.pairwise(blocks)]
        assert all(abs(s - 100_000_000) <= 1 for s in steps)  # 0.1 s of signal per block, whatever the speed
    assert gw.stats["blocks"] >= 6


async def test_gateway_replays_cwru_recordings(mosquitto: Mosquitto) -> None:
    """The real data set from ../shared: 12 kHz and 48 kHz recordings side by side, as the pipeline meets them."""
    files = {"de12k": "recordings/12k_drive_end_b007_0_118.npz", "de48k": "recordings/normal_0_97_head.npz"}
    gw_cfg = VibrationGatewayConfig(
        id="gw",
        port=mosquitto.port,
        data_dir=CWRU,
        streams=[GatewayStream(stream=k, file=v) for k, v in files.items()],
        block_s=0.05,
        speed=10.0,
    )
    src_cfg = source_config(mosquitto.port, {"topic": "plant/line1/+/vib", "codec": "f32le", "stream": "{levels[2]}"})
    async with opened(MqttSource(src_cfg)) as source, opened(VibrationGatewaySimulator(gw_cfg)) as gw:
        it = source.stream()
        task = asyncio.create_task(gw.run())
        try:
            got = await collect(it, 2)
            while len(got) < 2:
                for k, v in (await collect(it, 1)).items():
                    got.setdefault(k, []).extend(v)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await it.aclose()
    assert gw.stats["blocks"] >= 2
    rec12 = load_recording(CWRU / files["de12k"])
    assert rec12.fs_hz == 12_000.0
    first12, first48 = got["de12k"][0], got["de48k"][0]
    assert (first12.rate_hz, first12.value.shape) == (12_000.0, (600,))
    assert (first48.rate_hz, first48.value.shape) == (48_000.0, (2400,))
    np.testing.assert_array_equal(first12.value, rec12.samples[:600])


async def test_simulate_gateway_runs_for_a_duration_and_reports(mosquitto: Mosquitto) -> None:
    cfg = VibrationGatewayConfig(id="gw", port=mosquitto.port, streams=[GatewayStream(stream="m")], block_s=0.01)
    with raw_client(mosquitto.port, "plant/line1/m/vib") as (_, received):
        stats = await simulate_gateway(cfg, {"m": Recording(np.ones(64, np.float32), 1000.0)}, duration_s=0.3)
        msg = await asyncio.to_thread(received.get, timeout=20)
    assert stats["blocks"] >= 1
    assert dict(msg.properties.UserProperty)["rate_hz"] == "1000.0"  # type: ignore[union-attr]
    np.testing.assert_array_equal(decode_f32le(msg.payload), np.ones(10, np.float32))


def test_gateway_profile_is_a_valid_mqtt_device() -> None:
    """The device profile holds MqttConfig fields; a deployment adds the connection and the id."""
    profile = yaml.safe_load((REPO / "configs" / "devices" / "vibration_gateway_mqtt.yaml").read_text())
    cfg = MqttConfig.model_validate({"kind": "mqtt", "id": "gw1", **profile})
    assert [s.codec for s in cfg.subscriptions] == ["f32le"]
    assert (
        cfg.subscriptions[0].stream.format(id="gw1", topic="", topic_leaf="vib", levels=["plant", "line1", "m3", "vib"])
        == "gw1.m3.vib"
    )


async def test_missing_tls_ca_file_is_an_adapter_error(tmp_path: Path) -> None:
    sink = MqttSink(sink_config(1883, tls_ca_file=tmp_path / "absent.pem"))
    with pytest.raises(AdapterError, match=r"absent\.pem"):
        await sink.open()
    await sink.close()
