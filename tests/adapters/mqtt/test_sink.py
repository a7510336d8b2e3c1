"""MqttSink against a real mosquitto on loopback: acknowledged delivery, the wire format, outages."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.base import AdapterError, DeliveryError, Result
from adapters.mqtt.sink import MqttSink
from tests.helpers import until
from tests.helpers.mosquitto import Mosquitto

from .common import opened, raw_client, sink_config


def result(pipeline: str = "p", seq: int = 1, **fields: Any) -> Result:
    return Result(
        pipeline=pipeline, stream="gw.m3.vib", t_ns=1_700_000_000_000_000_000, decision="ok", seq=seq, **fields
    )


async def test_sink_delivers_json_with_qos1(mosquitto: Mosquitto) -> None:
    with raw_client(mosquitto.port, "edge/#") as (_, received):
        async with opened(MqttSink(sink_config(mosquitto.port))) as sink:
            await sink.deliver(result("bearings", 3, detail={"scores": np.array([0.1, 0.9], np.float32)}))
            msg = await asyncio.to_thread(received.get, timeout=20)
            assert sink.stats["delivered"] == 1
    assert msg.topic == "edge/bearings/result"
    assert msg.qos == 1
    assert not msg.retain
    doc = json.loads(msg.payload)
    assert doc["pipeline"] == "bearings"
    assert doc["seq"] == 3
    assert doc["scores"] == pytest.approx([0.1, 0.9])


async def test_payload_is_strict_json_with_plain_values(mosquitto: Mosquitto) -> None:
    """numpy values become numbers and lists, NaN and Inf null: strict parsers (Node-RED, browsers) accept it."""
    r = result(
        "p",
        7,
        score=float("nan"),
        values={"anomaly_score": np.float32(0.5), "ok": np.bool_(True), "inf": float("inf")},
        detail={"scores": np.array([0.25, np.nan], dtype=np.float32), "nested": [{"v": np.arange(3, dtype=np.int16)}]},
    )
    with raw_client(mosquitto.port, "edge/#") as (_, received):
        async with opened(MqttSink(sink_config(mosquitto.port))) as sink:
            await sink.deliver(r)
            msg = await asyncio.to_thread(received.get, timeout=20)
    doc = json.loads(msg.payload, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    assert doc == {
        "pipeline": "p",
        "seq": 7,
        "t_ns": 1_700_000_000_000_000_000,
        "latency_ns": 0,
        "model": "",
        "stream": "gw.m3.vib",
        "decision": "ok",
        "quality": "good",
        "label": None,
        "score": None,
        "anomaly_score": 0.5,
        "ok": True,
        "inf": None,
        "scores": [0.25, None],
        "nested": [{"v": [0, 1, 2]}],
    }


async def test_sink_fails_fast_while_broker_is_down_and_recovers(mosquitto: Mosquitto) -> None:
    async with opened(MqttSink(sink_config(mosquitto.port))) as sink:
        await sink.deliver(result(seq=1))
        mosquitto.stop()
        await until(lambda: sink.stats["disconnects"] == 1, what="disconnect noticed")
        with pytest.raises(DeliveryError):
            await sink.deliver(result(seq=2))
        assert sink.stats["refused_disconnected"] >= 1
        mosquitto.start()
        with raw_client(mosquitto.port, "edge/#") as (_, received):
            await until(lambda: sink.stats["connects"] == 2, what="reconnect")
            await sink.deliver(result(seq=2))
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
        await sink.deliver(result(seq=1))
    await sink.close()


async def test_missing_tls_ca_file_is_an_adapter_error(tmp_path: Path) -> None:
    sink = MqttSink(sink_config(1883, tls_ca_file=tmp_path / "absent.pem"))
    with pytest.raises(AdapterError, match=r"absent\.pem"):
        await sink.open()
    await sink.close()
