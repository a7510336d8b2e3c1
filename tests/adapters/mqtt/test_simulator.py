"""The simulated vibration gateway (adapters.mqtt.simulator) against a real mosquitto, read by MqttSource."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
import yaml

from adapters.mqtt.codec import decode_f32le
from adapters.mqtt.config import MqttConfig
from adapters.mqtt.simulator import (
    GatewayStream,
    VibrationGatewayConfig,
    VibrationGatewaySimulator,
    Waveform,
    gateway_for_profile,
    load_waveform,
    simulate,
    simulate_gateway,
)
from adapters.mqtt.source import MqttSource
from tests.helpers import until
from tests.helpers.mosquitto import Mosquitto

from .common import CWRU, PROFILE, collect, opened, raw_client, source_config


async def test_gateway_replays_in_memory_recordings_as_contiguous_blocks(mosquitto: Mosquitto) -> None:
    slow = Waveform(np.arange(250, dtype=np.float32), 1000.0)  # 100-sample blocks: the 3rd wraps around
    fast = Waveform(np.linspace(-1, 1, 48_000, dtype=np.float32), 48_000.0)
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
            got = await collect(it, streams=2, per_stream=3)
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
            got = await collect(it, streams=2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await it.aclose()
    assert gw.stats["blocks"] >= 2
    rec12 = load_waveform(CWRU / files["de12k"])
    assert rec12.fs_hz == 12_000.0
    first12, first48 = got["de12k"][0], got["de48k"][0]
    assert (first12.rate_hz, first12.value.shape) == (12_000.0, (600,))
    assert (first48.rate_hz, first48.value.shape) == (48_000.0, (2400,))
    np.testing.assert_array_equal(first12.value, rec12.samples[:600])


async def test_simulate_gateway_runs_for_a_duration_and_reports(mosquitto: Mosquitto) -> None:
    cfg = VibrationGatewayConfig(id="gw", port=mosquitto.port, streams=[GatewayStream(stream="m")], block_s=0.01)
    with raw_client(mosquitto.port, "plant/line1/m/vib") as (_, received):
        stats = await simulate_gateway(cfg, {"m": Waveform(np.ones(64, np.float32), 1000.0)}, duration_s=0.3)
        msg = await asyncio.to_thread(received.get, timeout=20)
    assert stats["blocks"] >= 1
    assert dict(msg.properties.UserProperty)["rate_hz"] == "1000.0"  # type: ignore[union-attr]
    np.testing.assert_array_equal(decode_f32le(msg.payload), np.ones(10, np.float32))


def profile(port: int, **changes: object) -> MqttConfig:
    """The vibration gateway profile as `edge-runtime simulate` loads it (id from the file name)."""
    raw = yaml.safe_load(PROFILE.read_text())
    return MqttConfig.model_validate({**raw, "id": PROFILE.stem, "port": port, **changes})


def test_profile_gateway_fills_wildcards_and_replays_one_class_per_subscription() -> None:
    two = profile(
        1883,
        subscriptions=[
            {"topic": "plant/+/+/vib", "codec": "f32le", "stream": "{id}.{levels[2]}.vib"},
            {"topic": "legacy/#", "codec": "json"},
        ],
        client_id="gw1-fixed",
    )
    gw = gateway_for_profile(two, CWRU, port=1999)
    assert [(s.topic, s.codec, s.stream) for s in gw.streams] == [
        ("plant/sim/normal/vib", "f32le", "normal"),
        ("legacy/ball", "json", "ball"),
    ]
    assert two.subscriptions[0].stream_name(two.id, gw.streams[0].topic) == "vibration_gateway_mqtt.normal.vib"
    assert all((CWRU / s.file).is_file() for s in gw.streams)
    assert (gw.port, gw.client_id) == (1999, "")  # never the device's client id: the broker would kick the device


async def test_simulate_replays_the_profile_to_its_own_subscriptions(mosquitto: Mosquitto) -> None:
    """`edge-runtime simulate vibration_gateway_mqtt.yaml --port P`: a source built from the same profile reads
    real bearing recordings, in both codecs."""
    cfg = profile(
        mosquitto.port,
        subscriptions=[
            *yaml.safe_load(PROFILE.read_text())["subscriptions"],
            {"topic": "legacy/+", "codec": "json", "stream": "old.{topic_leaf}"},
        ],
    )
    normal = load_waveform(CWRU / "recordings" / "normal_0_97_head.npz")
    stop = asyncio.Event()
    async with opened(MqttSource(cfg)) as source:
        it = source.stream()
        task = asyncio.create_task(simulate(cfg, port=str(mosquitto.port), stop=stop))
        try:
            got = await collect(it, streams=2)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)  # ends by itself once stop is set
            await it.aclose()
    first = got["vibration_gateway_mqtt.normal.vib"][0]
    assert (first.rate_hz, first.unit, first.value.shape) == (48_000.0, "g", (4800,))
    np.testing.assert_array_equal(first.value, normal.samples[:4800])
    ball = got["old.ball"][0]
    assert (ball.rate_hz, ball.value.shape) == (12_000.0, (1200,))


async def test_simulate_refuses_a_port_that_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="port"):
        await simulate(profile(1883), port="/dev/ttyUSB0", stop=asyncio.Event())


async def test_run_stops_when_stop_is_set(mosquitto: Mosquitto) -> None:
    cfg = VibrationGatewayConfig(id="gw", port=mosquitto.port, streams=[GatewayStream(stream="m")], block_s=0.01)
    stop = asyncio.Event()
    async with opened(VibrationGatewaySimulator(cfg, {"m": Waveform(np.ones(64, np.float32), 1000.0)})) as gw:
        task = asyncio.create_task(gw.run(stop=stop))
        await until(lambda: gw.stats["blocks"] >= 3, what="blocks published")
        stop.set()
        await asyncio.wait_for(task, 20)
