"""`MqttSink`: publishes each result as one JSON message; `deliver` returns only once the broker holds it.

`deliver` refuses at once while disconnected (nothing queues inside paho) and otherwise waits for the broker's
PUBACK (QoS 1) or PUBCOMP (QoS 2), so the outbox never drops a result the broker did not take. A publish that
timed out may still reach the broker after a reconnect: delivery is at-least-once (after a crash of the service
at most one result per sink is sent again: `edge_runtime.outbox`), consumers de-duplicate by (`pipeline`, `seq`).
"""

from __future__ import annotations

from adapters.base import DeliveryError, Result, Stats, dumps
from adapters.mqtt.config import MqttSinkConfig
from adapters.mqtt.connection import Connection, PublishAcks
from adapters.supervise import BurstLog

__all__ = ["MqttSink"]


class MqttSink:
    """Publishes `result.to_json()` (the product's one encoder: NaN as null, numpy as plain values)."""

    def __init__(self, config: MqttSinkConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._conn: Connection | None = None
        self._acks = PublishAcks(f"mqtt {self.name}", self.stats)
        self._unencodable = BurstLog("mqtt_unencodable_result", self.stats, "unencodable")

    async def open(self) -> None:
        conn = Connection(self.config, self.stats, max_queued=self.config.max_inflight)
        conn.on_publish(self._acks.acknowledged)
        conn.on_disconnect(self._acks.fail_all)
        self._conn = conn
        try:
            await conn.open()
        except BaseException:
            self._conn = None
            raise

    async def deliver(self, result: Result) -> None:
        import paho.mqtt.client as mqtt

        conn = self._conn
        if conn is None or conn.client is None:
            raise DeliveryError(f"mqtt {self.name}: deliver() before open()")
        if not conn.connected:
            self.stats["refused_disconnected"] += 1
            raise DeliveryError(f"mqtt {self.name}: not connected to {self.config.host}:{self.config.port}")
        topic = self.config.topic.format(id=self.config.id, pipeline=result.pipeline)
        try:
            payload = dumps(result.to_json()).encode()
        except (TypeError, ValueError) as exc:
            self._unencodable(sink=self.name, pipeline=result.pipeline, seq=result.seq, error=exc)
            raise DeliveryError(f"mqtt {self.name}: result is not JSON-encodable: {exc}") from exc
        info = conn.client.publish(topic, payload, qos=self.config.qos, retain=self.config.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats["refused"] += 1
            raise DeliveryError(f"mqtt {self.name}: publish refused: {mqtt.error_string(info.rc)}")
        await self._acks.wait(info.mid, self.config.timeout_s)
        self.stats["delivered"] += 1

    async def close(self) -> None:
        self._acks.fail_all()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
