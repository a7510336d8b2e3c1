"""SparkplugSource against a real mosquitto, fed by the product's edge node (SparkplugSink) and by hand-made
payloads (the test's own protobuf classes)."""

from __future__ import annotations

import asyncio
from time import time_ns

from adapters.base import Reading, Result
from adapters.sparkplug.sink import SparkplugSink
from adapters.sparkplug.source import SparkplugSource
from tests.adapters.mqtt.common import opened, raw_client
from tests.helpers import until
from tests.helpers.mosquitto import Mosquitto

from .common import Payload, sink_config, source_config


def result(seq: int, score: float) -> Result:
    return Result(
        pipeline="bearings",
        stream="gw.m3.vib",
        t_ns=time_ns(),
        decision="ok",
        score=score,
        values={"rms_mm_s": 1.5 * seq, "alarm": seq % 2 == 0},
        seq=seq,
    )


async def readings(source: SparkplugSource, n: int) -> list[Reading]:
    out: list[Reading] = []
    it = aiter(source.stream())
    while len(out) < n:
        out.append(await asyncio.wait_for(anext(it), 20))
    return out


async def test_reads_an_edge_nodes_metrics_through_its_aliases(mosquitto: Mosquitto) -> None:
    async with opened(SparkplugSource(source_config(mosquitto.port))) as source:
        async with opened(SparkplugSink(sink_config(mosquitto.port))) as sink:
            await sink.deliver(result(1, 0.25))
            await sink.deliver(result(2, 0.75))
        got = await readings(source, 3 * 6)  # DBIRTH, 2 DDATA: score, seq, t_ns, latency_ms, rms, alarm
    by_stream: dict[str, list[float]] = {}
    for r in got:
        by_stream.setdefault(r.stream, []).append(float(r.value))
    prefix = "sp.line1-edge.bearings."
    assert by_stream[prefix + "score"] == [0.25, 0.25, 0.75]  # birth value, then each DDATA
    assert by_stream[prefix + "values.rms_mm_s"] == [1.5, 1.5, 3.0]
    assert by_stream[prefix + "values.alarm"] == [0.0, 0.0, 1.0]
    assert source.stats["seq_gaps"] == 0
    assert source.stats["skipped"] > 0  # decision, label, model, stream, detail are strings


async def test_late_joiner_asks_for_a_rebirth_and_then_reads(mosquitto: Mosquitto) -> None:
    """A source started after the node's births cannot name its aliases: it sends NCMD Rebirth and the node
    (the product's sink) answers with NBIRTH and DBIRTH."""
    async with opened(SparkplugSink(sink_config(mosquitto.port))) as sink:
        await sink.deliver(result(1, 0.5))
        async with opened(SparkplugSource(source_config(mosquitto.port))) as source:
            got: list[Reading] = []

            async def consume() -> None:
                async for r in source.stream():
                    got.append(r)

            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(consume())
                await sink.deliver(result(2, 0.5))  # unknown device to the source: ask for a rebirth
                await until(lambda: sink.stats["rebirths"] == 1, what="rebirth answered")
                await sink.deliver(result(3, 0.125))
                await until(lambda: any(r.stream.endswith(".score") and r.value == 0.125 for r in got), what="data")
                task.cancel()
    assert source.stats["unborn"] == 1
    assert source.stats["rebirth_requests"] >= 1
    scores = [float(r.value) for r in got if r.stream.endswith(".score")]
    assert scores == [0.5, 0.125]  # the DBIRTH of the rebirth (last value 0.5), then the DDATA


async def test_malformed_payload_is_counted_not_fatal(mosquitto: Mosquitto) -> None:
    async with opened(SparkplugSource(source_config(mosquitto.port, edge_node_id="n1"))) as source:
        with raw_client(mosquitto.port) as (client, _):
            client.publish("spBv1.0/plant1/NBIRTH/n1", b"\xff\xff\xff", qos=1)
            birth = Payload()(timestamp=1, seq=0)
            m = birth.metrics.add()
            m.name, m.alias, m.datatype, m.int_value = "Inputs/Temp", 5, 3, (-7) & 0xFFFFFFFF  # Int32 -7
            client.publish("spBv1.0/plant1/NBIRTH/n1", birth.SerializeToString(), qos=1)
            data = Payload()(timestamp=2, seq=1)
            m = data.metrics.add()
            m.alias, m.int_value = 5, 21
            client.publish("spBv1.0/plant1/NDATA/n1", data.SerializeToString(), qos=1)
            got = await readings(source, 2)
    assert source.stats["malformed"] == 1
    assert [(r.stream, float(r.value)) for r in got] == [
        ("sp.n1.node.Inputs.Temp", -7.0),
        ("sp.n1.node.Inputs.Temp", 21.0),
    ]
    assert got[1].t_ns == 2_000_000
