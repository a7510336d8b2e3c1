"""A simulated vibration gateway: replays real bearing recordings as waveform blocks over MQTT.

`simulate(config, port=..., stop=...)` is what `edge-runtime simulate PROFILE` runs for an MQTT device profile
(e.g. `configs/devices/vibration_gateway_mqtt.yaml`): it connects to the broker at `config.host`, port `--port`
(else `config.port`), and for each subscription of the profile publishes one waveform stream on a topic that
subscription matches, in the subscription's codec, until `stop` is set. Stream *i* replays the drive-end channel
of one CWRU recording from `../shared/datasets/cwru_bearing` (the first file of each fault class in `labels.csv`,
`normal` first, then the others in name order, cycling when there are more subscriptions than classes), at real
time, in 0.1 s blocks, looping at the end. A filter's wildcard levels are filled with `sim`, except the last one,
which names the fault class (`plant/+/+/vib` -> `plant/sim/normal/vib`), so the stream's name says what it replays.

`VibrationGatewaySimulator` is the same publisher driven by an explicit `VibrationGatewayConfig` (tests, demo,
recordings passed in memory as `Waveform`s).
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator

from adapters.base import AdapterError, Stats, StrictModel, now_ns
from adapters.mqtt.codec import encode_f32le, encode_json_block
from adapters.mqtt.config import MqttConfig, MqttConnectionConfig, check_template
from adapters.mqtt.connection import Connection

__all__ = [
    "GatewayStream",
    "VibrationGatewayConfig",
    "VibrationGatewaySimulator",
    "Waveform",
    "find_cwru",
    "gateway_for_profile",
    "load_waveform",
    "simulate",
    "simulate_gateway",
]

log = logging.getLogger("adapters.mqtt")

CWRU = Path("shared") / "datasets" / "cwru_bearing"


@dataclass(frozen=True, slots=True)
class Waveform:
    """One channel of a vibration recording: float32 samples in g and their sample rate."""

    samples: npt.NDArray[np.float32]
    fs_hz: float


def load_waveform(path: Path, channel: str = "de") -> Waveform:
    """A channel of a CWRU-layout `.npz` (arrays `de`/`fe` in g, 0-d `fs_hz`)."""
    with np.load(path) as npz:
        if channel not in npz:
            raise AdapterError(f"{path}: no channel {channel!r} (has {sorted(npz.files)})")
        samples = np.asarray(npz[channel], dtype=np.float32).reshape(-1)
        fs_hz = float(npz["fs_hz"])
    return Waveform(samples, fs_hz)


def find_cwru() -> Path | None:
    """`shared/datasets/cwru_bearing` beside the checkout or the working directory (data sets are read in place)."""
    checkout = Path(__file__).resolve().parents[2]
    for base in (checkout.parent, Path.cwd().parent, Path.cwd()):
        if (base / CWRU).is_dir():
            return base / CWRU
    return None


class GatewayStream(StrictModel):
    """One simulated sensor: which recording it replays, where, and in which codec."""

    stream: str = Field(description="Sensor name; fills `{stream}` in the topic template.", min_length=1)
    file: str = Field(
        default="",
        description="Recording relative to `data_dir` (e.g. `recordings/12k_drive_end_b007_0_118.npz`); "
        "empty when the recording is passed in memory.",
    )
    channel: Literal["de", "fe"] = Field(default="de", description="Accelerometer channel (drive end / fan end).")
    topic: str = Field(default="", description="Topic of this sensor; empty: the gateway's `topic` template.")
    codec: Literal["f32le", "json"] = Field(
        default="f32le", description="`f32le` blocks with MQTT 5 properties, or `json` documents with a value list."
    )


class VibrationGatewayConfig(MqttConnectionConfig):
    """A simulated vibration gateway replaying real bearing recordings as waveform blocks."""

    kind: Literal["mqtt-vibration-gateway"] = Field(default="mqtt-vibration-gateway", description="Simulator kind.")
    data_dir: Path = Field(default=Path("..") / CWRU, description="CWRU-layout data set (labels.csv, recordings/).")
    streams: list[GatewayStream] = Field(min_length=1, description="Simulated sensors, one topic each.")
    topic: str = Field(default="plant/line1/{stream}/vib", description="Topic template; fields `{stream}` and `{id}`.")
    block_s: float = Field(default=0.1, gt=0, le=10, description="Duration of one published block.")
    speed: float = Field(default=1.0, gt=0, le=1000, description="Replay speed: 1 is real time, 10 ten times faster.")
    qos: Literal[0, 1] = Field(default=0, description="Publish QoS of the blocks.")

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, v: str) -> str:
        return check_template(v, {"stream": "s", "id": "g"}, "topic")


@dataclass(frozen=True, slots=True)
class _Plan:
    topic: str
    codec: Literal["f32le", "json"]
    wave: Waveform
    block: int  # samples per block


class VibrationGatewaySimulator:
    """Publishes each stream's recording block by block, paced at `speed` x real time, looping at the end.

    Blocks carry their sample rate and the time of their first sample (`f32le`: user properties `rate_hz`,
    `t0_ns`, `unit`; `json`: the document's `rate_hz`, `t_ns`, `unit`). `t0_ns` follows the signal's own timeline
    from the start of the run, so consecutive blocks of a stream are contiguous whatever the replay speed.
    """

    def __init__(self, config: VibrationGatewayConfig, recordings: Mapping[str, Waveform] | None = None) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._given = dict(recordings or {})
        self._conn: Connection | None = None

    def _plan(self) -> list[_Plan]:
        cfg, plans = self.config, []
        for s in cfg.streams:
            if s.stream in self._given:
                wave = self._given[s.stream]
            elif s.file:
                wave = load_waveform(cfg.data_dir / s.file, s.channel)
            else:
                raise AdapterError(f"gateway {self.name}: stream {s.stream!r} has neither a file nor a recording")
            if wave.samples.size == 0:
                raise AdapterError(f"gateway {self.name}: empty recording for stream {s.stream!r}")
            topic = s.topic or cfg.topic.format(stream=s.stream, id=cfg.id)
            plans.append(_Plan(topic, s.codec, wave, max(1, round(cfg.block_s * wave.fs_hz))))
        return plans

    async def open(self) -> None:
        self._conn = Connection(self.config, self.stats)
        await self._conn.open()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def run(self, duration_s: float | None = None, *, stop: asyncio.Event | None = None) -> None:
        """Publish until cancelled, `stop` is set, or `duration_s` of wall time has passed."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self._conn is None or self._conn.client is None:
            raise AdapterError(f"gateway {self.name}: run() before open()")
        client = self._conn.client
        plans = await asyncio.to_thread(self._plan)
        cfg = self.config
        loop = asyncio.get_running_loop()
        start = begin = loop.time()
        start_ns = now_ns()
        pos = [0] * len(plans)
        k = 0
        while (duration_s is None or loop.time() - begin < duration_s) and not (stop is not None and stop.is_set()):
            for j, p in enumerate(plans):
                block = _take(p.wave.samples, pos[j], p.block)
                t0_ns = start_ns + round(pos[j] / p.wave.fs_hz * 1e9)
                if p.codec == "json":
                    info = client.publish(
                        p.topic, encode_json_block(block, rate_hz=p.wave.fs_hz, t0_ns=t0_ns, unit="g"), qos=cfg.qos
                    )
                else:
                    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    props.UserProperty = [("rate_hz", repr(p.wave.fs_hz)), ("t0_ns", str(t0_ns)), ("unit", "g")]
                    info = client.publish(p.topic, encode_f32le(block), qos=cfg.qos, properties=props)
                self.stats["blocks" if info.rc == 0 else "unsent"] += 1
                pos[j] += p.block
            k += 1
            delay = start + k * cfg.block_s / cfg.speed - loop.time()
            if delay < -1.0:  # fell more than a second behind (loaded box): resume pacing from now
                self.stats["late"] += 1
                start, k = loop.time(), 0
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))


async def simulate_gateway(
    config: VibrationGatewayConfig,
    recordings: Mapping[str, Waveform] | None = None,
    *,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> Stats:
    """Run a simulated gateway until cancelled, `stop` is set or `duration_s` has passed; return its counters."""
    sim = VibrationGatewaySimulator(config, recordings)
    await sim.open()
    try:
        await sim.run(duration_s, stop=stop)
    finally:
        await sim.close()
    return sim.stats


def _take(samples: npt.NDArray[np.float32], start: int, n: int) -> npt.NDArray[np.float32]:
    """`n` samples from `start`, wrapping around the end of the recording."""
    idx = (start + np.arange(n)) % samples.size
    return samples[idx]


def _class_files(data_dir: Path) -> list[tuple[str, str]]:
    """(fault class, file) of the first recording of each class in `labels.csv`: `normal` first, then by name."""
    index = data_dir / "labels.csv"
    try:
        with index.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise AdapterError(f"{index}: cannot read the data set's index: {exc}") from exc
    first: dict[str, str] = {}
    for row in rows:
        if row.get("fault") and row.get("file"):
            first.setdefault(row["fault"], row["file"])
    if not first:
        raise AdapterError(f"{index}: no recordings listed (needs `file` and `fault` columns)")
    return sorted(first.items(), key=lambda kv: (kv[0] != "normal", kv[0]))


def _concrete_topic(topic_filter: str, sensor: str) -> str:
    """A topic the filter matches: wildcard levels become `sim`, the last one `sensor`."""
    levels = topic_filter.split("/")
    wild = [i for i, level in enumerate(levels) if level in ("+", "#")]
    for i in wild:
        levels[i] = sensor if i == wild[-1] else "sim"
    return "/".join(levels)


def _port(port: str | None, default: int) -> int:
    if port is None:
        return default
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"MQTT simulator: port {port!r} must be a TCP port number (the broker's)")
    return int(port)


def gateway_for_profile(config: MqttConfig, data_dir: Path, *, port: int | None = None) -> VibrationGatewayConfig:
    """The gateway that `simulate` runs for an MQTT device profile (see the module docstring)."""
    classes = _class_files(data_dir)
    streams = []
    for i, sub in enumerate(config.subscriptions):
        fault, file = classes[i % len(classes)]
        sensor = fault if len(config.subscriptions) <= len(classes) else f"{fault}{i}"
        streams.append(
            GatewayStream(stream=sensor, file=file, topic=_concrete_topic(sub.topic, sensor), codec=sub.codec)
        )
    return VibrationGatewayConfig(
        id=f"{config.id}-sim",
        host=config.host,
        port=config.port if port is None else port,
        client_id="",  # never the device's own id: the broker would disconnect the real client
        username=config.username,
        password=config.password,
        tls_ca_file=config.tls_ca_file,
        tls_cert_file=config.tls_cert_file,
        tls_key_file=config.tls_key_file,
        tls_check_hostname=config.tls_check_hostname,
        data_dir=data_dir,
        streams=streams,
    )


async def simulate(config: MqttConfig, *, port: str | None, stop: asyncio.Event) -> None:
    """Replay bearing recordings on the profile's subscriptions until `stop` is set (see the module docstring)."""
    broker_port = _port(port, config.port)
    data_dir = find_cwru()
    if data_dir is None:
        raise AdapterError(f"MQTT simulator: ../{CWRU} is not here; there is nothing to replay")
    gateway = gateway_for_profile(config, data_dir, port=broker_port)
    for sub, s in zip(config.subscriptions, gateway.streams, strict=True):
        try:
            stream = sub.stream_name(config.id, s.topic)
        except IndexError:  # the template names a level this topic lacks: the source will count it malformed
            stream = "?"
        log.info("event=mqtt_simulating topic=%s codec=%s stream=%s file=%s", s.topic, s.codec, stream, s.file)
    await simulate_gateway(gateway, stop=stop)
