"""`SparkplugSink`: the service as a Sparkplug B edge node, one Sparkplug device per pipeline.

Session (all on `spBv1.0/{group_id}/...`):

- CONNECT carries NDEATH as the last will, with the session's `bdSeq` (0-255, one more per connection); on each
  CONNACK the node publishes NBIRTH (`seq` 0, `bdSeq`, `Node Control/Rebirth`), then a DBIRTH for every
  pipeline it has delivered for. The will of the next connection is set right away, with the next `bdSeq`.
- A pipeline's first result (or one with a `values` key the birth lacked) publishes its DBIRTH: every metric
  with its name, alias and datatype. DDATA then names metrics by alias only.
- Every NBIRTH/DBIRTH/DDATA carries `seq`, 0-255 and wrapping, in publish order.
- NCMD `Node Control/Rebirth` = true: NBIRTH and every DBIRTH again, with `seq` restarting at 0.
- A result stored before the current session began (delivered from the outbox after an outage or a restart)
  goes out with `is_historical` on its metrics and its own timestamp, so hosts record it without taking it as
  the current value.

`deliver` refuses while the session is not born (the outbox keeps the result) and otherwise returns when the
broker acknowledged the DDATA (QoS 1; with QoS 0 when paho wrote it to the socket).
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any

from adapters.base import DeliveryError, Result, Stats, dumps, now_ns
from adapters.mqtt.connection import Connection, PublishAcks
from adapters.sparkplug.config import SparkplugSinkConfig
from adapters.sparkplug.payload import BOOLEAN, DOUBLE, INT64, REBIRTH, STRING, UINT64, Metric, decode, encode, topic
from adapters.supervise import BurstLog

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = ["SparkplugSink", "device_id"]

log = logging.getLogger("adapters.sparkplug")

_BAD_ID = re.compile(r"[/+#]")

# the head of every result, in birth order: (metric name, datatype)
_HEAD = (
    ("decision", STRING),
    ("label", STRING),
    ("score", DOUBLE),
    ("seq", UINT64),
    ("t_ns", INT64),
    ("latency_ms", DOUBLE),
    ("model", STRING),
    ("stream", STRING),
    ("detail", STRING),
)


def device_id(pipeline: str) -> str:
    """The Sparkplug device id of a pipeline (one topic level)."""
    return _BAD_ID.sub("_", pipeline) or "_"


def _values_of(result: Result) -> dict[str, Any]:
    latency_ms = result.latency_ns / 1e6
    return {
        "decision": result.decision,
        "label": result.label,
        "score": result.score,
        "seq": result.seq,
        "t_ns": result.t_ns,
        "latency_ms": latency_ms,
        "model": result.model,
        "stream": result.stream,
        "detail": dumps(result.detail),
        **{f"values/{k}": v for k, v in result.values.items()},
    }


def _datatype_of(value: Any) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, str):
        return STRING
    return DOUBLE  # numbers, and a first value of None (most `values` are measurements)


def _coerce(datatype: int, value: Any) -> Any:
    """A value in its metric's datatype (fixed at birth); what cannot be converted is sent as null."""
    if value is None:
        return None
    try:
        if datatype == DOUBLE:
            v = float(value)
            return v if math.isfinite(v) else None
        if datatype == BOOLEAN:
            return bool(value)
        if datatype in (INT64, UINT64):
            return int(value)
        return str(value)
    except (TypeError, ValueError):
        return None


class _Device:
    """A pipeline's metrics: name -> (alias, datatype), in birth order, and the last values (for a rebirth)."""

    def __init__(self) -> None:
        self.metrics: dict[str, tuple[int, int]] = {}
        self.last: dict[str, Any] = {}


class SparkplugSink:
    """Results as Sparkplug B DDATA, one device per pipeline (see the module docstring)."""

    def __init__(self, config: SparkplugSinkConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._conn: Connection | None = None
        self._devices: dict[str, _Device] = {}
        self._next_alias = 1  # alias 0 is left unused: some hosts read 0 as "no alias"
        self._next_bd_seq = 0  # the bdSeq in the will of the next CONNECT (paho's thread owns it)
        self.bd_seq = 0  # of the current session
        self._seq = 0
        self._born = False
        self._birth_ns = 0
        self._acks = PublishAcks(f"sparkplug {self.name}", self.stats)
        self._bad_command = BurstLog("sparkplug_bad_ncmd", self.stats, "malformed_commands")

    # -- topics and births ------------------------------------------------------------------------------------

    def _topic(self, message_type: str, device: str | None = None) -> str:
        return topic(self.config.group_id, message_type, self.config.edge_node_id, device)

    def _ndeath(self, bd_seq: int) -> bytes:
        return encode([Metric("bdSeq", None, INT64, bd_seq)], timestamp_ms=now_ns() // 1_000_000, seq=None)

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _publish(self, topic_: str, payload: bytes) -> paho.MQTTMessageInfo:
        conn = self._conn
        if conn is None or conn.client is None:
            raise DeliveryError(f"sparkplug {self.name}: not open")
        return conn.client.publish(topic_, payload, qos=self.config.qos, retain=False)

    def _set_will(self, client: paho.Client) -> None:  # before the first CONNECT, then on paho's thread
        client.will_set(self._topic("NDEATH"), self._ndeath(self._next_bd_seq), qos=1, retain=False)

    def _paho_connected(self, client: paho.Client) -> None:  # paho's thread, on every CONNACK
        session_bd = self._next_bd_seq
        self._next_bd_seq = (session_bd + 1) % 256
        self._set_will(client)  # used by the next CONNECT only
        ncmd = self._topic("NCMD")
        client.message_callback_add(ncmd, self._paho_command)
        client.subscribe(ncmd, qos=1)
        conn = self._conn
        if conn is not None:
            conn.call_soon(self._birth, session_bd)

    def _birth(self, bd_seq: int) -> None:
        """NBIRTH and every known DBIRTH; `seq` restarts at 0."""
        if self._conn is None:  # closed meanwhile (`connected` is set after this is scheduled: not checked)
            return
        self.bd_seq = bd_seq
        self._seq = 0
        self._birth_ns = now_ns()
        ts = self._birth_ns // 1_000_000
        metrics = [Metric("bdSeq", None, INT64, bd_seq), Metric(REBIRTH, None, BOOLEAN, False)]
        self._publish(self._topic("NBIRTH"), encode(metrics, timestamp_ms=ts, seq=self._take_seq()))
        for device in self._devices:
            self._device_birth(device)
        self._born = True
        self.stats["births"] += 1
        log.info(
            "event=sparkplug_birth sink=%s node=%s/%s bdSeq=%d devices=%d",
            self.name,
            self.config.group_id,
            self.config.edge_node_id,
            bd_seq,
            len(self._devices),
        )

    def _device_birth(self, device: str) -> None:
        d = self._devices[device]
        ts = now_ns() // 1_000_000
        metrics = [Metric(name, alias, dt, d.last.get(name)) for name, (alias, dt) in d.metrics.items()]
        self._publish(self._topic("DBIRTH", device), encode(metrics, timestamp_ms=ts, seq=self._take_seq()))

    def _paho_command(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:  # paho thread
        conn = self._conn
        if conn is not None:
            conn.call_soon(self._command, bytes(msg.payload))

    def _command(self, data: bytes) -> None:
        try:
            metrics = decode(data).metrics
        except ValueError as exc:
            self._bad_command(sink=self.name, error=exc)
            return
        if any(m.name == REBIRTH and m.value is True for m in metrics) and self._born:
            self.stats["rebirths"] += 1
            log.info("event=sparkplug_rebirth_requested sink=%s", self.name)
            self._birth(self.bd_seq)

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def open(self) -> None:
        conn = Connection(
            self.config,
            self.stats,
            on_connect=self._paho_connected,
            before_connect=self._set_will,
            max_queued=0,
        )
        conn.send_will_on_close = True  # a clean close is announced by NDEATH too
        conn.on_publish(self._acks.acknowledged)
        conn.on_disconnect(self._lost)
        self._conn = conn
        try:
            await conn.open()
        except BaseException:
            self._conn = None
            raise

    def _lost(self) -> None:
        self._born = False
        self._acks.fail_all()

    async def deliver(self, result: Result) -> None:
        import paho.mqtt.client as mqtt

        if self._conn is None:
            raise DeliveryError(f"sparkplug {self.name}: deliver() before open()")
        if not self._born:
            self.stats["refused_not_born"] += 1
            raise DeliveryError(f"sparkplug {self.name}: no Sparkplug session (not connected or not yet born)")
        device = device_id(result.pipeline)
        values = _values_of(result)
        d = self._devices.get(device)
        if d is None or any(name not in d.metrics for name in values):
            d = self._devices.setdefault(device, _Device())
            for name, _ in _HEAD:
                d.metrics.setdefault(name, (self._alias(), dict(_HEAD)[name]))
            for name, value in values.items():
                if name not in d.metrics:
                    d.metrics[name] = (self._alias(), _datatype_of(value))
            d.last = {name: _coerce(dt, values.get(name)) for name, (_, dt) in d.metrics.items()}
            self._device_birth(device)
        historical = result.t_ns < self._birth_ns
        ts = result.t_ns // 1_000_000
        metrics = []
        for name, value in values.items():
            alias, dt = d.metrics[name]
            v = _coerce(dt, value)
            metrics.append(Metric(None, alias, dt, v, timestamp_ms=ts, is_historical=historical))
            if not historical:
                d.last[name] = v
        payload = encode(metrics, timestamp_ms=now_ns() // 1_000_000, seq=self._take_seq())
        info = self._publish(self._topic("DDATA", device), payload)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats["refused"] += 1
            raise DeliveryError(f"sparkplug {self.name}: publish refused: {mqtt.error_string(info.rc)}")
        await self._acks.wait(info.mid, self.config.timeout_s)
        self.stats["delivered"] += 1
        if historical:
            self.stats["historical"] += 1

    def _alias(self) -> int:
        alias = self._next_alias
        self._next_alias += 1
        return alias

    async def close(self) -> None:
        self._born = False
        self._acks.fail_all()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
