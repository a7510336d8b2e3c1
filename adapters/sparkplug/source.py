"""`SparkplugSource`: readings from Sparkplug B edge nodes that already publish (device kind `sparkplug`).

It subscribes to the group's NBIRTH/NDATA/DBIRTH/DDATA/NDEATH/DDEATH of one node (or `+`), learns each node's
and device's metrics (name, alias, datatype) from the births, and turns numeric and boolean metrics of the data
messages into scalar `Reading`s named `{id}.{edge node}.{device, or 'node'}.{metric}` (a metric's `/` becomes
`.`). Strings and other types are skipped (counted in `skipped`); a null value is skipped too. A data message
naming an alias or device whose birth was missed (joined late, lost message), or a `seq` gap, asks the node
for a rebirth (NCMD `Node Control/Rebirth`) when `rebirth_on_unknown_alias` is on. Undecodable payloads are
counted (`malformed`) and logged once per burst.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from adapters.base import AdapterError, Reading, Stats, now_ns
from adapters.mqtt.connection import Connection, Inbox
from adapters.sparkplug.config import SparkplugConfig
from adapters.sparkplug.payload import BOOLEAN, NAMESPACE, REBIRTH, Metric, decode, encode, topic
from adapters.supervise import DecodeGuard

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = ["SparkplugSource"]

log = logging.getLogger("adapters.sparkplug")

_NODE = "node"  # the device part of the stream name for node-level metrics


@dataclass
class _Birth:
    names: dict[int, str] = field(default_factory=dict)  # alias -> name
    types: dict[int, int] = field(default_factory=dict)  # alias -> datatype


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    recv_ns: int


class SparkplugSource:
    """Readings from Sparkplug NDATA/DDATA, decoded with the births' aliases (see the module docstring)."""

    def __init__(self, config: SparkplugConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._conn: Connection | None = None
        self._inbox: Inbox[_Message] | None = None
        self._births: dict[tuple[str, str], _Birth] = {}  # (node, device or "") -> birth
        self._seq: dict[str, int] = {}  # node -> last seq
        # every source's guarded decode: any exception a payload causes is counted, and readings pass check_sample
        self._guard = DecodeGuard("sparkplug_malformed", self.stats, "malformed", source=self.name)

    @property
    def _filter(self) -> str:
        return f"{NAMESPACE}/{self.config.group_id}/+/{self.config.edge_node_id}/#"

    async def open(self) -> None:
        self._inbox = Inbox(self.config.queue_size, self.stats, "sparkplug_queue_full", self.name)
        # `{node}/#` matches node messages (4 levels) too, since `#` also matches the parent level
        conn = Connection(self.config, self.stats, on_connect=self._add_callbacks, subscriptions=[(self._filter, 1)])
        self._conn = conn
        try:
            await conn.open()
        except AdapterError:
            self._conn = self._inbox = None
            raise

    def _add_callbacks(self, client: paho.Client) -> None:  # paho thread, every (re)connect
        client.on_message = self._paho_message

    def _paho_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:  # paho thread
        item = _Message(msg.topic, bytes(msg.payload), now_ns())
        conn, inbox = self._conn, self._inbox
        if conn is not None and inbox is not None:
            inbox.post(conn.call_soon, item, item.topic)

    def request_rebirth(self, node: str) -> None:
        """Publish NCMD `Node Control/Rebirth` = true to `node`."""
        conn = self._conn
        if conn is None or conn.client is None:
            return
        payload = encode([Metric(REBIRTH, None, BOOLEAN, True)], timestamp_ms=now_ns() // 1_000_000, seq=None)
        conn.client.publish(topic(self.config.group_id, "NCMD", node), payload, qos=0)
        self.stats["rebirth_requests"] += 1

    def _readings(self, msg: _Message) -> list[Reading]:
        levels = msg.topic.split("/")
        if len(levels) not in (4, 5):
            raise ValueError(f"not a Sparkplug topic: {msg.topic}")
        message_type, node = levels[2], levels[3]
        device = levels[4] if len(levels) == 5 else ""
        if message_type in ("NDEATH", "DDEATH", "NCMD", "DCMD", "STATE"):
            if message_type == "NDEATH":
                self._births = {k: v for k, v in self._births.items() if k[0] != node}
                self._seq.pop(node, None)
            return []
        key = (node, device)
        birth = self._births.get(key)
        decoded = decode(msg.payload, birth.types if birth else None)
        if message_type in ("NBIRTH", "DBIRTH"):
            birth = _Birth()
            for m in decoded.metrics:
                if m.alias is not None and m.name is not None:
                    birth.names[m.alias] = m.name
                    birth.types[m.alias] = m.datatype
            self._births[key] = birth
            if message_type == "NBIRTH":
                self._seq[node] = decoded.seq if decoded.seq is not None else 0
            else:
                self._check_seq(node, decoded.seq)
            self.stats["births"] += 1
            return self._to_readings(node, device, decoded.metrics, birth, msg.recv_ns, decoded.timestamp_ms)
        if message_type not in ("NDATA", "DDATA"):
            raise ValueError(f"unknown Sparkplug message type {message_type!r}")
        self._check_seq(node, decoded.seq)
        if birth is None:
            self.stats["unborn"] += 1
            if self.config.rebirth_on_unknown_alias:
                self.request_rebirth(node)
            return []
        return self._to_readings(node, device, decoded.metrics, birth, msg.recv_ns, decoded.timestamp_ms)

    def _check_seq(self, node: str, seq: int | None) -> None:
        last = self._seq.get(node)
        if seq is None or last is None:
            return
        self._seq[node] = seq
        if seq != (last + 1) % 256:
            self.stats["seq_gaps"] += 1
            if self.config.rebirth_on_unknown_alias:
                self.request_rebirth(node)

    def _to_readings(
        self, node: str, device: str, metrics: list[Metric], birth: _Birth, recv_ns: int, payload_ts: int | None
    ) -> list[Reading]:
        out = []
        for m in metrics:
            name = m.name if m.name is not None else birth.names.get(m.alias if m.alias is not None else -1)
            if name is None:
                self.stats["unknown_alias"] += 1
                if self.config.rebirth_on_unknown_alias:
                    self.request_rebirth(node)
                continue
            if m.value is None or isinstance(m.value, str | bytes) or name in (REBIRTH, "bdSeq"):
                self.stats["skipped"] += 1
                continue
            ts = m.timestamp_ms if m.timestamp_ms is not None else payload_ts
            t_ns = ts * 1_000_000 if ts is not None else recv_ns
            stream = ".".join((self.config.id, node, device or _NODE, name.replace("/", ".")))
            value = np.asarray(float(m.value), dtype=np.float64)
            out.append(Reading(stream, t_ns, value, "uncertain" if m.is_historical else "good"))
        return out

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Yields readings; stays open across broker outages (paho reconnects and subscribes again)."""
        if self._inbox is None:
            raise AdapterError(f"sparkplug {self.name}: stream() before open()")
        inbox = self._inbox
        while True:
            msg = await inbox.get()
            readings = self._guard(self._readings, msg, topic=msg.topic)
            for r in readings or ():
                self.stats["readings"] += 1
                yield r

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self._inbox = None
