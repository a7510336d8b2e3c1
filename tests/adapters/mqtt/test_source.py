"""MqttSource against a real mosquitto on loopback: both codecs, malformed payloads, back-pressure, outages."""

from __future__ import annotations

import json
import logging
from time import time_ns

import numpy as np
import pytest
from paho.mqtt.properties import Properties

from adapters.base import AdapterError
from adapters.mqtt.codec import encode_f32le
from adapters.mqtt.source import MqttSource
from tests.helpers import until
from tests.helpers.mosquitto import Mosquitto

from .common import next_reading, opened, props, raw_client, source_config


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


async def test_hostile_payloads_never_leave_the_stream(mosquitto: Mosquitto) -> None:
    """Payloads that raised TypeError, OverflowError or RecursionError out of the decoder (and so cut the
    connection), or that slipped through as NaN/Inf, are each refused and counted; the stream keeps going."""
    cfg = source_config(mosquitto.port, {"topic": "j/#", "rate_hz": 100}, {"topic": "f/#", "codec": "f32le"})
    bad: list[tuple[str, bytes, Properties | None]] = [
        ("j/a", b'{"value":1,"quality":[]}', None),
        ("j/a", b'{"value":1,"ts":1e300}', None),
        ("j/a", b'{"value":1,"t_ns":' + b"9" * 400 + b"}", None),
        ("j/a", b"9" * 400, None),
        ("j/a", b"[" * 100_000, None),
        ("j/a", b'{"value":[1,2],"rate_hz":Infinity}', None),
        ("j/a", b'{"value":[1,2],"rate_hz":1e-300}', None),
        ("j/a", b"[1,null,2]", None),
        ("j/a", b"Infinity", None),
        ("j/a", b'{"value":[1,NaN]}', None),
        ("f/a", encode_f32le([1.0]), props(rate_hz="inf")),
        ("f/a", encode_f32le([1.0, float("inf")]), props(rate_hz="100")),
        ("f/a", encode_f32le([1.0]), props(rate_hz="100", t0_ns="-5")),
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
    assert (source.stats["malformed"], source.stats["readings"]) == (len(bad), 1)


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
        await until(lambda: source.stats["subscribed"] == 2, what="subscriptions acknowledged again")
        with raw_client(mosquitto.port) as (pub, _):
            pub.publish("plant/a/temp", b"2", qos=1).wait_for_publish(20)
            r = await next_reading(it)
        await it.aclose()
    assert float(r.value) == 2.0


async def test_source_open_fails_when_no_broker(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    source = MqttSource(source_config(mosquitto.port, {"topic": "a"}, connect_timeout_s=1.0))
    with pytest.raises(AdapterError):
        await source.open()
    await source.close()
