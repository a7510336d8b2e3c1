"""Helpers of the MQTT tests: configs, a plain paho client to see the wire, and waiting for readings."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.base import Reading
from adapters.mqtt.config import MqttConfig, MqttSinkConfig

REPO = Path(__file__).resolve().parents[3]
CWRU = REPO.parent / "shared" / "datasets" / "cwru_bearing"
PROFILE = REPO / "configs" / "devices" / "vibration_gateway_mqtt.yaml"


class _Component(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


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


async def collect(it: AsyncIterator[Reading], streams: int, per_stream: int = 1) -> dict[str, list[Reading]]:
    """Readings by stream, read until `streams` streams have at least `per_stream` each."""
    by_stream: dict[str, list[Reading]] = {}
    while len(by_stream) < streams or min(len(v) for v in by_stream.values()) < per_stream:
        r = await next_reading(it)
        by_stream.setdefault(r.stream, []).append(r)
    return by_stream


C = TypeVar("C", bound=_Component)


@asynccontextmanager
async def opened(component: C) -> AsyncIterator[C]:
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
