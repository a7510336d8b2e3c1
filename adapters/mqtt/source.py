"""`MqttSource`: readings from MQTT subscriptions (payload formats: `adapters.mqtt`, docs/mqtt.md).

paho's network thread stamps each message on arrival and hands it to the event loop through a bounded queue
(overflow is dropped and counted in `stats["dropped"]`); decoding happens in `stream()` on the loop. paho
reconnects by itself and `on_connect` subscribes again, so `stream()` does not end on a broker outage.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterError, Reading, Stats, now_ns
from adapters.mqtt.codec import decoder_for
from adapters.mqtt.config import MqttConfig
from adapters.mqtt.connection import Connection, Inbox
from adapters.supervise import DecodeGuard

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = ["MqttSource"]

log = logging.getLogger("adapters.mqtt")

_MAX_STREAM_NAMES = 10_000  # wildcard floods must not grow the name cache without bound


@dataclass(frozen=True, slots=True)
class _Message:
    sub: int
    topic: str
    payload: bytes
    props: dict[str, str]
    recv_ns: int


def _user_properties(msg: paho.MQTTMessage) -> dict[str, str]:
    props = getattr(msg, "properties", None)
    pairs = getattr(props, "UserProperty", None) if props is not None else None
    return dict(pairs) if pairs else {}


class MqttSource:
    """Readings from MQTT subscriptions, one `Reading` per decodable message."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._decoders = [decoder_for(s) for s in config.subscriptions]
        self._inbox: Inbox[_Message] | None = None
        self._conn: Connection | None = None
        self._streams: dict[tuple[int, str], str] = {}
        self._guard = DecodeGuard("mqtt_malformed", self.stats, "malformed", source=self.name)

    async def open(self) -> None:
        """Connect and return once the broker confirmed the subscriptions (no message is missed after it)."""
        self._inbox = Inbox(self.config.queue_size, self.stats, "mqtt_queue_full", self.name)
        subscriptions = [(s.topic, int(s.qos)) for s in self.config.subscriptions]
        conn = Connection(self.config, self.stats, on_connect=self._add_callbacks, subscriptions=subscriptions)
        self._conn = conn
        try:
            await conn.open()
        except AdapterError:
            self._conn = self._inbox = None
            raise

    def _add_callbacks(self, client: paho.Client) -> None:  # paho thread, on every (re)connect
        for i, sub in enumerate(self.config.subscriptions):
            client.message_callback_add(sub.topic, self._message_callback(i))

    def _message_callback(self, index: int) -> Callable[[paho.Client, Any, paho.MQTTMessage], None]:
        def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:  # paho thread
            item = _Message(index, msg.topic, bytes(msg.payload), _user_properties(msg), now_ns())
            conn, inbox = self._conn, self._inbox  # None once close() started: late messages are dropped
            if conn is not None and inbox is not None:
                inbox.post(conn.call_soon, item, item.topic)

        return on_message

    def _stream_name(self, index: int, topic: str) -> str:
        key = (index, topic)
        name = self._streams.get(key)
        if name is None:
            name = self.config.subscriptions[index].stream_name(self.config.id, topic)
            if len(self._streams) > _MAX_STREAM_NAMES:
                self._streams.clear()
            self._streams[key] = name
        return name

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Yields a Reading per decodable message; stays open across broker outages (paho reconnects)."""
        if self._inbox is None:
            raise AdapterError(f"mqtt {self.name}: stream() before open()")
        inbox = self._inbox
        while True:
            msg = await inbox.get()
            reading = self._guard(self._decode, msg, topic=msg.topic)
            if reading is not None:
                self.stats["readings"] += 1
                yield reading

    def _decode(self, msg: _Message) -> Reading:
        d = self._decoders[msg.sub](msg.payload, msg.props, msg.recv_ns)
        return Reading(self._stream_name(msg.sub, msg.topic), d.t_ns, d.value, d.quality, d.unit, d.rate_hz)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self._inbox = None
