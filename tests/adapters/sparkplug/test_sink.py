"""SparkplugSink against a real mosquitto; every payload is decoded by the test's own protobuf classes."""

from __future__ import annotations

import asyncio
import queue
from time import time_ns
from typing import Any

import paho.mqtt.client as paho
import pytest

from adapters.base import DeliveryError, Result
from adapters.sparkplug.sink import SparkplugSink
from tests.adapters.mqtt.common import opened, raw_client
from tests.helpers import until
from tests.helpers.mosquitto import Mosquitto

from .common import decode, metrics_by_name, rebirth_command, sink_config, value


def result(seq: int, *, t_ns: int | None = None, pipeline: str = "weld", **fields: Any) -> Result:
    base: dict[str, Any] = {
        "pipeline": pipeline,
        "stream": "cell1.cam",
        "t_ns": time_ns() if t_ns is None else t_ns,  # live: after the session's birth
        "decision": "reject",
        "label": "porosity",
        "score": 0.875,
        "values": {"n_boxes": 2, "ok": False},
        "seq": seq,
        "latency_ns": 12_500_000,
        "model": "weld_inspector@1.2.0+abcd",
    }
    return Result(**{**base, **fields})


async def next_msg(received: queue.Queue[paho.MQTTMessage], timeout_s: float = 20.0) -> tuple[str, Any]:
    msg = await asyncio.to_thread(received.get, timeout=timeout_s)
    return msg.topic, decode(bytes(msg.payload))


async def test_birth_certificates_aliases_and_data(mosquitto: Mosquitto) -> None:
    with raw_client(mosquitto.port, "spBv1.0/#") as (_, received):
        async with opened(SparkplugSink(sink_config(mosquitto.port))) as sink:
            topic, nbirth = await next_msg(received)
            assert topic == "spBv1.0/plant1/NBIRTH/line1-edge"
            assert nbirth.seq == 0
            node = metrics_by_name(nbirth)
            assert (value(node["bdSeq"]), node["bdSeq"].datatype) == (0, 4)  # Int64
            assert (value(node["Node Control/Rebirth"]), node["Node Control/Rebirth"].datatype) == (False, 11)

            await sink.deliver(result(1))
            await sink.deliver(result(2, score=None, values={"n_boxes": 0, "ok": True}))
            topic, dbirth = await next_msg(received)
            _, ddata1 = await next_msg(received)
            topic2, ddata2 = await next_msg(received)
    assert topic == "spBv1.0/plant1/DBIRTH/line1-edge/weld"
    assert topic2 == "spBv1.0/plant1/DDATA/line1-edge/weld"
    assert [dbirth.seq, ddata1.seq, ddata2.seq] == [1, 2, 3]
    born = metrics_by_name(dbirth)
    assert set(born) >= {"decision", "label", "score", "seq", "latency_ms", "model", "values/n_boxes", "values/ok"}
    aliases = [m.alias for m in dbirth.metrics]
    assert len(set(aliases)) == len(aliases) and 0 not in aliases
    assert (born["decision"].datatype, value(born["decision"])) == (12, "reject")  # String
    assert (born["values/ok"].datatype, value(born["values/ok"])) == (11, False)  # Boolean
    by_alias = {m.alias: name for name, m in born.items()}
    for ddata, expected in (
        (ddata1, {"score": 0.875, "values/n_boxes": 2.0, "values/ok": False, "seq": 1, "latency_ms": 12.5}),
        (ddata2, {"score": None, "values/n_boxes": 0.0, "values/ok": True, "seq": 2}),
    ):
        assert all(not m.HasField("name") for m in ddata.metrics), "DDATA names metrics by alias only"
        got = {by_alias[m.alias]: value(m) for m in ddata.metrics}
        assert {k: got[k] for k in expected} == expected
        assert not any(m.is_historical for m in ddata.metrics)
    assert ddata1.metrics[0].timestamp == value(ddata1.metrics[by_alias_inv(born, "t_ns")]) // 1_000_000


def by_alias_inv(born: dict[str, Any], name: str) -> int:
    """Index of metric `name` in a DDATA laid out in birth order."""
    return list(born).index(name)


async def test_new_values_key_rebirths_the_device(mosquitto: Mosquitto) -> None:
    with raw_client(mosquitto.port, "spBv1.0/plant1/DBIRTH/#") as (_, received):
        async with opened(SparkplugSink(sink_config(mosquitto.port))) as sink:
            await sink.deliver(result(1))
            await sink.deliver(result(2, values={"n_boxes": 1, "ok": False, "porosity_mm2": 3.5}))
            _, first = await next_msg(received)
            _, second = await next_msg(received)
    assert "values/porosity_mm2" not in metrics_by_name(first)
    assert value(metrics_by_name(second)["values/porosity_mm2"]) == 3.5
    # aliases already given keep their numbers
    assert {m.name: m.alias for m in first.metrics}.items() <= {m.name: m.alias for m in second.metrics}.items()


async def test_rebirth_on_ncmd(mosquitto: Mosquitto) -> None:
    with raw_client(mosquitto.port, "spBv1.0/plant1/+/line1-edge/#") as (client, received):
        client.on_message = lambda c, u, msg: None if "/NCMD/" in msg.topic else received.put(msg)
        async with opened(SparkplugSink(sink_config(mosquitto.port))) as sink:
            await sink.deliver(result(1))
            seen = [await next_msg(received) for _ in range(3)]  # NBIRTH, DBIRTH, DDATA
            client.publish("spBv1.0/plant1/NCMD/line1-edge", rebirth_command(), qos=1)
            (t1, nbirth), (t2, dbirth) = await next_msg(received), await next_msg(received)
            await sink.deliver(result(2))
            t3, ddata = await next_msg(received)
            assert sink.stats["rebirths"] == 1
    assert [t.split("/")[2] for t, _ in seen] == ["NBIRTH", "DBIRTH", "DDATA"]
    assert (t1.split("/")[2], nbirth.seq) == ("NBIRTH", 0)
    assert value(metrics_by_name(nbirth)["bdSeq"]) == 0  # same session, same bdSeq
    assert (t2.split("/")[2], dbirth.seq) == ("DBIRTH", 1)
    assert [m.alias for m in dbirth.metrics] == [m.alias for m in seen[1][1].metrics]
    assert (t3.split("/")[2], ddata.seq) == ("DDATA", 2)


async def test_ndeath_on_close_carries_the_session_bdseq(mosquitto: Mosquitto) -> None:
    with raw_client(mosquitto.port, "spBv1.0/plant1/NDEATH/#") as (_, received):
        sink = SparkplugSink(sink_config(mosquitto.port))
        await sink.open()
        await until(lambda: sink.stats["births"] == 1, what="NBIRTH")
        await sink.close()
        topic, ndeath = await next_msg(received)
    assert topic == "spBv1.0/plant1/NDEATH/line1-edge"
    assert value(metrics_by_name(ndeath)["bdSeq"]) == 0
    assert not ndeath.HasField("seq")


async def test_outage_new_bdseq_and_backlog_flagged_historical(mosquitto: Mosquitto) -> None:
    """After an outage the node is born again with the next bdSeq; results stored during the outage (older than
    the new birth) go out with `is_historical`, later ones without."""
    async with opened(SparkplugSink(sink_config(mosquitto.port))) as sink:
        await until(lambda: sink.stats["births"] == 1, what="first birth")
        await sink.deliver(result(1, t_ns=None))
        mosquitto.stop()
        await until(lambda: sink.stats["disconnects"] == 1, what="disconnect noticed")
        stored_during_outage = time_ns()
        with pytest.raises(DeliveryError, match="no Sparkplug session"):
            await sink.deliver(result(2, t_ns=stored_during_outage))
        mosquitto.start()
        with raw_client(mosquitto.port, "spBv1.0/+/DDATA/#") as (_, received):
            await until(lambda: sink.stats["births"] == 2, what="birth after the outage")
            await sink.deliver(result(2, t_ns=stored_during_outage))  # the outbox's retry
            await sink.deliver(result(3, t_ns=time_ns()))
            msgs = [await next_msg(received) for _ in range(2)]
    assert [t.split("/")[2] for t, _ in msgs] == ["DDATA", "DDATA"]
    (_, old), (_, new) = msgs
    assert all(m.is_historical for m in old.metrics)
    assert not any(m.is_historical for m in new.metrics)
    assert sink.bd_seq == 1
    assert sink.stats["historical"] == 1


async def test_seq_wraps_after_255(mosquitto: Mosquitto) -> None:
    with raw_client(mosquitto.port, "spBv1.0/#") as (_, received):
        async with opened(SparkplugSink(sink_config(mosquitto.port, qos=0))) as sink:
            await until(lambda: sink.stats["births"] == 1, what="birth")
            for i in range(1, 261):
                await sink.deliver(result(i))
            seqs = [(await next_msg(received))[1].seq for _ in range(262)]  # NBIRTH, DBIRTH, 260 DDATA
    assert seqs == [i % 256 for i in range(262)]
