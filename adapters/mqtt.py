"""MQTT (v5, paho-mqtt 2.x): a source of readings, a result sink, and a simulated vibration gateway.

Payloads a subscription decodes (its `codec`):

- `json`: a bare number (`21.5`), or a document
  `{"value": number | [numbers], "t_ns": int | "ts": float seconds, "rate_hz": float, "quality": str, "unit": str}`.
  A list is a waveform block and needs a rate (from the document or the subscription's `rate_hz`).
- `f32le`: the raw block of little-endian float32 samples, nothing else in the payload. The block's metadata
  travels in MQTT 5 user properties: `rate_hz` (sample rate) and `t0_ns` (UTC epoch ns of the first sample).
  Without `rate_hz` the subscription's `rate_hz` applies; without `t0_ns` the block is taken to end on arrival.
  Properties instead of a header keep the payload a plain array any tool can write (`numpy.tobytes()`), and
  keep metadata readable in broker tools; the one design, see docs/mqtt.md.

Connection loss: paho's own network thread reconnects with exponential back-off (`reconnect_min_s` ..
`reconnect_max_s`) and `on_connect` subscribes again, so `MqttSource.stream()` does not end on an outage; it
counts `disconnects`. `MqttSink.deliver()` refuses at once while disconnected and otherwise waits for the
broker's PUBACK (QoS 1) or PUBCOMP (QoS 2), so a result is never acknowledged before the broker holds it.
A publish that timed out may still reach the broker after a reconnect: delivery is at-least-once, consumers
de-duplicate by (`pipeline`, `seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.base import AdapterError, DeliveryError, Quality, Reading, Stats, StrictModel, jsonable, now_ns

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = [
    "GatewayStream",
    "MqttConfig",
    "MqttSink",
    "MqttSinkConfig",
    "MqttSource",
    "MqttSubscription",
    "Recording",
    "VibrationGatewayConfig",
    "VibrationGatewaySimulator",
    "decode_f32le",
    "encode_f32le",
    "encode_json",
    "load_recording",
    "simulate_gateway",
]

log = logging.getLogger("adapters.mqtt")

_QUALITIES: frozenset[str] = frozenset({"good", "uncertain", "bad"})
_LEVEL_RE = re.compile(r"^[^+#]*$")


def _check_topic_filter(topic: str) -> str:
    """MQTT filter rules: `+` fills a whole level, `#` only as the whole last level."""
    if not topic:
        raise ValueError("topic must not be empty")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if level in ("+", "#"):
            if level == "#" and i != len(levels) - 1:
                raise ValueError(f"'#' must be the last level: {topic!r}")
        elif not _LEVEL_RE.match(level):
            raise ValueError(f"'+' and '#' must fill a whole level: {topic!r}")
    return topic


def _check_template(template: str, fields: Mapping[str, object], what: str) -> str:
    try:
        template.format_map(fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(f"bad {what} template {template!r}: {exc!r}; allowed fields: {sorted(fields)}") from exc
    return template


# --------------------------------------------------------------------------------------------------- config


class _ConnectionConfig(StrictModel):
    """Broker connection options shared by the source, the sink and the simulated gateway."""

    id: str = Field(description="Component id; also the `{id}` in stream and topic templates.", min_length=1)
    host: str = Field(default="127.0.0.1", description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port (8883 is usual with TLS).")
    client_id: str = Field(
        default="", description="MQTT client id; empty lets the broker assign one. Must be unique per broker."
    )
    username: str | None = Field(default=None, description="User name, if the broker requires one.")
    password: SecretStr | None = Field(default=None, description="Password; use `${ENV_NAME}` in the file.")
    tls_ca_file: Path | None = Field(
        default=None, description="CA certificate (PEM) that signed the broker's certificate; enables TLS."
    )
    keepalive_s: int = Field(default=30, ge=5, le=65535, description="MQTT keep-alive: ping after this idle time.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="How long `open()` waits for the first CONNACK before failing."
    )
    reconnect_min_s: float = Field(default=1.0, gt=0, description="First reconnect delay after a lost connection.")
    reconnect_max_s: float = Field(
        default=30.0, gt=0, description="Ceiling of the doubling reconnect delay (paho's back-off)."
    )

    @model_validator(mode="after")
    def _reconnect_order(self) -> _ConnectionConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


_STREAM_FIELDS: dict[str, object] = {
    "id": "dev",
    "topic": "a.b.c",
    "topic_leaf": "c",
    "levels": ["l"] * 32,
}


class MqttSubscription(StrictModel):
    """One topic filter and how its payloads become readings."""

    topic: str = Field(description="Topic filter; `+` matches one level, `#` the rest (e.g. `plant/+/vib`).")
    codec: Literal["json", "f32le"] = Field(
        default="json", description="`json` (number or document) or `f32le` (raw little-endian float32 block)."
    )
    stream: str = Field(
        default="{id}.{topic_leaf}",
        description=(
            "Stream name, or a template with `{id}` (device id), `{topic}` (levels joined by '.'), "
            "`{topic_leaf}` (last level), `{levels[N]}` (level N from 0)."
        ),
    )
    unit: str = Field(default="", description="Unit of the values unless the payload names one (e.g. `g`, `degC`).")
    rate_hz: float | None = Field(
        default=None, gt=0, description="Sample rate of waveform blocks when the message does not carry one."
    )
    qos: Literal[0, 1, 2] = Field(default=0, description="Subscription QoS (0 suits high-rate waveform blocks).")

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, v: str) -> str:
        return _check_topic_filter(v)

    @field_validator("stream")
    @classmethod
    def _check_stream(cls, v: str) -> str:
        return _check_template(v, _STREAM_FIELDS, "stream")


class MqttConfig(_ConnectionConfig):
    """A device (or gateway) that publishes readings to an MQTT broker."""

    kind: Literal["mqtt"] = Field(description="Device kind.")
    subscriptions: list[MqttSubscription] = Field(
        min_length=1, description="Topic filters to subscribe to, each with its codec and stream naming."
    )
    queue_size: int = Field(
        default=1000, ge=1, description="Messages held between paho's thread and the pipeline; overflow is dropped."
    )


_SINK_FIELDS: dict[str, object] = {"id": "sink", "pipeline": "p"}


class MqttSinkConfig(_ConnectionConfig):
    """Publishes each result as one JSON message and confirms it with the broker's acknowledgement."""

    kind: Literal["mqtt"] = Field(description="Sink kind.")
    topic: str = Field(
        default="edge/{pipeline}/result", description="Topic template; fields `{pipeline}` and `{id}` (sink id)."
    )
    qos: Literal[1, 2] = Field(default=1, description="Publish QoS; 1 or 2, since delivery must be acknowledged.")
    retain: bool = Field(default=False, description="Ask the broker to retain the last result per topic.")
    timeout_s: float = Field(
        default=10.0, gt=0, description="How long `deliver` waits for the acknowledgement before failing."
    )
    max_inflight: int = Field(
        default=20, ge=1, le=65535, description="Publishes awaiting acknowledgement at once (paho queue bound)."
    )

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, v: str) -> str:
        _check_template(v, _SINK_FIELDS, "topic")
        if "+" in v or "#" in v:
            raise ValueError("a publish topic must not contain '+' or '#'")
        return v


# --------------------------------------------------------------------------------------------------- codecs


class _MalformedError(ValueError):
    """A payload this subscription cannot decode; counted, never raised out of the stream."""


def encode_f32le(samples: npt.ArrayLike) -> bytes:
    """The `f32le` payload of a block: its samples as little-endian float32, nothing else."""
    return np.ascontiguousarray(samples, dtype="<f4").tobytes()


def decode_f32le(payload: bytes | bytearray) -> npt.NDArray[np.float32]:
    """Samples of an `f32le` payload (a writable native float32 array); ValueError if not whole floats."""
    if not payload or len(payload) % 4:
        raise _MalformedError(f"f32le payload of {len(payload)} bytes is not a whole number of float32")
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)


def encode_json(obj: Any) -> bytes:
    """Compact strict JSON (no NaN tokens) of a result that may hold numpy values."""
    return json.dumps(jsonable(obj), separators=(",", ":"), allow_nan=False).encode()


def _user_properties(msg: paho.MQTTMessage) -> dict[str, str]:
    props = getattr(msg, "properties", None)
    pairs = getattr(props, "UserProperty", None) if props is not None else None
    return dict(pairs) if pairs else {}


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _MalformedError(f"{what} is not a number: {value!r}")
    try:
        out = float(value)
    except ValueError as exc:
        raise _MalformedError(f"{what} is not a number: {value!r}") from exc
    return out


@dataclass(frozen=True, slots=True)
class _Decoded:
    t_ns: int
    value: npt.NDArray[Any]
    rate_hz: float | None
    quality: Quality
    unit: str


Decoder = Callable[[bytes, Mapping[str, str], int], _Decoded]


def _json_decoder(sub: MqttSubscription) -> Decoder:
    def decode(payload: bytes, props: Mapping[str, str], recv_ns: int) -> _Decoded:
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _MalformedError(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            doc = {"value": doc}
        raw = doc.get("value")
        quality = doc.get("quality", "good")
        if quality not in _QUALITIES:
            raise _MalformedError(f"quality {quality!r} is not one of {sorted(_QUALITIES)}")
        unit = doc.get("unit", sub.unit)
        if not isinstance(unit, str):
            raise _MalformedError(f"unit is not a string: {unit!r}")
        if "t_ns" in doc:
            t_raw = doc["t_ns"]
            if isinstance(t_raw, bool) or not isinstance(t_raw, int):
                raise _MalformedError(f"t_ns is not an integer: {t_raw!r}")
            t_ns = t_raw
        elif "ts" in doc:
            t_ns = round(_as_float(doc["ts"], "ts") * 1e9)
        else:
            t_ns = recv_ns
        if isinstance(raw, list):
            try:
                value = np.asarray(raw, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise _MalformedError(f"value list is not numeric: {exc}") from exc
            if value.ndim != 1 or value.size == 0:
                raise _MalformedError(f"value list must be a non-empty flat list, got shape {value.shape}")
            rate = doc.get("rate_hz", sub.rate_hz)
            if rate is None:
                raise _MalformedError("a waveform block needs rate_hz (in the document or the subscription)")
            rate_hz = _as_float(rate, "rate_hz")
            if not rate_hz > 0:
                raise _MalformedError(f"rate_hz must be > 0, got {rate_hz}")
            return _Decoded(t_ns, value, rate_hz, quality, unit)
        if raw is None:
            raise _MalformedError("no value")
        if isinstance(raw, str):
            raise _MalformedError(f"value is not a number: {raw!r}")
        return _Decoded(t_ns, np.asarray(_as_float(raw, "value"), dtype=np.float64), None, quality, unit)

    return decode


def _f32le_decoder(sub: MqttSubscription) -> Decoder:
    def decode(payload: bytes, props: Mapping[str, str], recv_ns: int) -> _Decoded:
        samples = decode_f32le(payload)
        rate = props.get("rate_hz", sub.rate_hz)
        if rate is None:
            raise _MalformedError("f32le block without a rate_hz user property and no subscription rate_hz")
        rate_hz = _as_float(rate, "rate_hz")
        if not rate_hz > 0:
            raise _MalformedError(f"rate_hz must be > 0, got {rate_hz}")
        if "t0_ns" in props:
            try:
                t_ns = int(props["t0_ns"])
            except ValueError as exc:
                raise _MalformedError(f"t0_ns is not an integer: {props['t0_ns']!r}") from exc
        else:  # the gateway sent the block when its last sample arrived
            t_ns = recv_ns - round(samples.size / rate_hz * 1e9)
        return _Decoded(t_ns, samples, rate_hz, "good", props.get("unit", sub.unit))

    return decode


_DECODERS: dict[str, Callable[[MqttSubscription], Decoder]] = {"json": _json_decoder, "f32le": _f32le_decoder}


class _BurstLog:
    """Logs the first failure of a burst, then at most one summary per `interval_s`."""

    def __init__(self, event: str, interval_s: float = 10.0) -> None:
        self.event = event
        self.interval_s = interval_s
        self._last = -math.inf
        self._suppressed = 0

    def __call__(self, name: str, topic: str, why: object) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            log.warning(
                "event=%s source=%s topic=%s suppressed=%d error=%s", self.event, name, topic, self._suppressed, why
            )
            self._last = now
            self._suppressed = 0
        else:
            self._suppressed += 1


# --------------------------------------------------------------------------------------------------- connection


class _Connection:
    """One paho client on its own network thread; callbacks come back to the event loop thread-safely."""

    def __init__(
        self,
        config: _ConnectionConfig,
        stats: Stats,
        *,
        on_connect: Callable[[paho.Client], None] | None = None,
        max_queued: int = 0,
    ) -> None:
        self.config = config
        self.stats = stats
        self.connected = False
        self._on_connect_hook = on_connect
        self._max_queued = max_queued
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first_connack: asyncio.Future[None] | None = None
        self._on_disconnect_hooks: list[Callable[[], None]] = []
        self._on_publish_hooks: list[Callable[[int, bool, str], None]] = []
        self.client: paho.Client | None = None

    def on_disconnect(self, hook: Callable[[], None]) -> None:
        self._on_disconnect_hooks.append(hook)

    def on_publish(self, hook: Callable[[int, bool, str], None]) -> None:
        """`hook(mid, ok, reason)` runs on the event loop when the broker acknowledges a publish."""
        self._on_publish_hooks.append(hook)

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on the event loop; callable from paho's thread, a no-op once the loop is gone."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(fn, *args)

    async def open(self) -> paho.Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._first_connack = self._loop.create_future()
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5
        )
        client.enable_logger(logging.getLogger("adapters.mqtt.paho"))
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls_ca_file is not None:
            try:
                client.tls_set(ca_certs=str(cfg.tls_ca_file))
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise AdapterError(f"mqtt {cfg.id}: TLS CA file {cfg.tls_ca_file}: {exc}") from exc
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        if self._max_queued:
            client.max_inflight_messages_set(self._max_queued)
            client.max_queued_messages_set(self._max_queued)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        self.client = client
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)
        client.loop_start()  # its thread retries the first connection too, with the back-off above
        try:
            await asyncio.wait_for(asyncio.shield(self._first_connack), cfg.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise AdapterError(
                f"mqtt {cfg.id}: no connection to {cfg.host}:{cfg.port} within {cfg.connect_timeout_s} s"
            ) from None
        except AdapterError:
            await self.close()
            raise
        return client

    async def close(self) -> None:
        if self._first_connack is not None and not self._first_connack.done():
            self._first_connack.cancel()
        client, self.client = self.client, None
        self.connected = False
        if client is None:
            return
        client.disable_logger()  # paho logs a spurious "not connected" error when its loop races the disconnect
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    def _paho_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:  # paho thread
        if reason.is_failure:
            self.call_soon(self._refused, str(reason))
            return
        if self._on_connect_hook is not None:
            self._on_connect_hook(client)
        self.connected = True
        self.call_soon(self._connected)

    def _connected(self) -> None:
        self.stats["connects"] += 1
        log.info("event=mqtt_connected id=%s host=%s port=%d", self.config.id, self.config.host, self.config.port)
        self._settle_first(None)

    def _refused(self, reason: str) -> None:
        self.stats["connect_refused"] += 1
        log.warning("event=mqtt_connect_refused id=%s reason=%s", self.config.id, reason)
        self._settle_first(f"broker refused the connection: {reason}")

    def _settle_first(self, error: str | None) -> None:
        fut = self._first_connack
        if fut is None or fut.done():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(AdapterError(f"mqtt {self.config.id}: {error}"))

    def _paho_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.call_soon(self._disconnected, str(reason))

    def _disconnected(self, reason: str) -> None:
        self.stats["disconnects"] += 1
        log.warning("event=mqtt_disconnected id=%s reason=%s", self.config.id, reason)
        for hook in self._on_disconnect_hooks:
            hook()

    def _paho_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        ok = not reason.is_failure
        for hook in self._on_publish_hooks:
            self.call_soon(hook, mid, ok, str(reason))


# --------------------------------------------------------------------------------------------------- source


@dataclass(frozen=True, slots=True)
class _Message:
    sub: int
    topic: str
    payload: bytes
    props: dict[str, str]
    recv_ns: int


class MqttSource:
    """Readings from MQTT subscriptions (see the module docstring for the payload formats).

    paho's network thread stamps each message on arrival and hands it to the event loop through a bounded
    queue (`stats["dropped"]` counts overflow); decoding happens in `stream()` on the loop.
    """

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._decoders = [_DECODERS[s.codec](s) for s in config.subscriptions]
        self._queue: asyncio.Queue[_Message] | None = None
        self._conn: _Connection | None = None
        self._streams: dict[tuple[int, str], str] = {}
        self._malformed_log = _BurstLog("mqtt_malformed")
        self._drop_log = _BurstLog("mqtt_queue_full")
        self._subscribed: asyncio.Future[None] | None = None

    async def open(self) -> None:
        """Connect and return once the broker confirmed the subscriptions (no message is missed after it)."""
        self._queue = asyncio.Queue(self.config.queue_size)
        self._subscribed = asyncio.get_running_loop().create_future()
        conn = _Connection(self.config, self.stats, on_connect=self._subscribe)
        self._conn = conn
        await conn.open()
        try:
            await asyncio.wait_for(asyncio.shield(self._subscribed), self.config.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise AdapterError(f"mqtt {self.name}: no SUBACK within {self.config.connect_timeout_s} s") from None
        except AdapterError:
            await self.close()
            raise

    def _subscribe(self, client: paho.Client) -> None:  # paho thread, on every (re)connect
        for i, sub in enumerate(self.config.subscriptions):
            client.message_callback_add(sub.topic, self._message_callback(i))
        client.on_subscribe = self._paho_subscribed
        client.subscribe([(s.topic, int(s.qos)) for s in self.config.subscriptions])

    def _paho_subscribed(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:  # paho thread
        refused = [f"{s.topic}: {r}" for s, r in zip(self.config.subscriptions, reasons, strict=False) if r.is_failure]
        conn = self._conn
        if conn is not None:
            conn.call_soon(self._subscribe_done, refused)

    def _subscribe_done(self, refused: list[str]) -> None:
        if refused:
            self.stats["subscribe_refused"] += 1
            log.warning("event=mqtt_subscribe_refused source=%s refused=%s", self.name, "; ".join(refused))
        fut = self._subscribed
        if fut is not None and not fut.done():
            if refused:
                fut.set_exception(AdapterError(f"mqtt {self.name}: subscription refused: {'; '.join(refused)}"))
            else:
                fut.set_result(None)

    def _message_callback(self, index: int) -> Callable[[paho.Client, Any, paho.MQTTMessage], None]:
        def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:  # paho thread
            item = _Message(index, msg.topic, bytes(msg.payload), _user_properties(msg), now_ns())
            conn = self._conn  # None once close() started: late messages are dropped
            if conn is not None:
                conn.call_soon(self._enqueue, item)

        return on_message

    def _enqueue(self, item: _Message) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            self._drop_log(self.name, item.topic, f"queue of {self.config.queue_size} full")

    def _stream_name(self, index: int, topic: str) -> str:
        key = (index, topic)
        name = self._streams.get(key)
        if name is None:
            levels = topic.split("/")
            name = self.config.subscriptions[index].stream.format(
                id=self.config.id, topic=".".join(levels), topic_leaf=levels[-1], levels=levels
            )
            if len(self._streams) > 10_000:  # wildcard floods must not grow memory without bound
                self._streams.clear()
            self._streams[key] = name
        return name

    async def stream(self) -> AsyncIterator[Reading]:
        """Yields a Reading per decodable message; stays open across broker outages (paho reconnects)."""
        if self._queue is None:
            raise AdapterError(f"mqtt {self.name}: stream() before open()")
        queue = self._queue
        while True:
            msg = await queue.get()
            try:
                d = self._decoders[msg.sub](msg.payload, msg.props, msg.recv_ns)
                stream = self._stream_name(msg.sub, msg.topic)
            except (_MalformedError, ValueError, IndexError, KeyError) as exc:
                self.stats["malformed"] += 1
                self._malformed_log(self.name, msg.topic, exc)
                continue
            self.stats["readings"] += 1
            yield Reading(stream, d.t_ns, d.value, d.quality, d.unit, d.rate_hz)

    async def close(self) -> None:
        if self._subscribed is not None and not self._subscribed.done():
            self._subscribed.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self._queue = None


# --------------------------------------------------------------------------------------------------- sink


class MqttSink:
    """Publishes results as JSON; `deliver` returns only after the broker acknowledged the message."""

    def __init__(self, config: MqttSinkConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._conn: _Connection | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}

    async def open(self) -> None:
        conn = _Connection(self.config, self.stats, max_queued=self.config.max_inflight)
        conn.on_publish(self._acknowledged)
        conn.on_disconnect(self._fail_pending)
        self._conn = conn
        try:
            await conn.open()
        except BaseException:
            self._conn = None
            raise

    def _acknowledged(self, mid: int, ok: bool, reason: str) -> None:
        fut = self._pending.get(mid)
        if fut is None or fut.done():
            return  # a late acknowledgement of a publish that already failed or timed out
        if ok:
            fut.set_result(None)
        else:
            fut.set_exception(DeliveryError(f"mqtt {self.name}: broker rejected the publish: {reason}"))

    def _fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(DeliveryError(f"mqtt {self.name}: connection lost before acknowledgement"))

    async def deliver(self, result: Mapping[str, Any]) -> None:
        import paho.mqtt.client as mqtt

        conn = self._conn
        if conn is None or conn.client is None:
            raise DeliveryError(f"mqtt {self.name}: deliver() before open()")
        if not conn.connected:
            self.stats["refused_disconnected"] += 1
            raise DeliveryError(f"mqtt {self.name}: not connected to {self.config.host}:{self.config.port}")
        topic = self.config.topic.format(id=self.config.id, pipeline=result.get("pipeline", "unknown"))
        try:
            payload = encode_json(result)
        except (TypeError, ValueError) as exc:
            self.stats["unencodable"] += 1
            raise DeliveryError(f"mqtt {self.name}: result is not JSON-encodable: {exc}") from exc
        info = conn.client.publish(topic, payload, qos=self.config.qos, retain=self.config.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats["refused"] += 1
            raise DeliveryError(f"mqtt {self.name}: publish refused: {mqtt.error_string(info.rc)}")
        # registered before the next await, so the acknowledgement (scheduled on this loop) cannot be missed
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[info.mid] = fut
        try:
            await asyncio.wait_for(fut, self.config.timeout_s)
        except TimeoutError:
            self.stats["timeouts"] += 1
            raise DeliveryError(
                f"mqtt {self.name}: no acknowledgement within {self.config.timeout_s} s (mid {info.mid})"
            ) from None
        except DeliveryError:
            self.stats["failed"] += 1
            raise
        finally:
            self._pending.pop(info.mid, None)
        self.stats["delivered"] += 1

    async def close(self) -> None:
        self._fail_pending()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


# --------------------------------------------------------------------------------------------------- simulator


@dataclass(frozen=True, slots=True)
class Recording:
    """One channel of a vibration recording: float32 samples in g and their sample rate."""

    samples: npt.NDArray[np.float32]
    fs_hz: float


def load_recording(path: Path, channel: str = "de") -> Recording:
    """A channel of a CWRU-layout `.npz` (arrays `de`/`fe` in g, 0-d `fs_hz`)."""
    with np.load(path) as npz:
        if channel not in npz:
            raise AdapterError(f"{path}: no channel {channel!r} (has {sorted(npz.files)})")
        samples = np.asarray(npz[channel], dtype=np.float32).reshape(-1)
        fs_hz = float(npz["fs_hz"])
    return Recording(samples, fs_hz)


class GatewayStream(StrictModel):
    """One simulated sensor: which recording it replays."""

    stream: str = Field(description="Stream name; fills `{stream}` in the topic template.", min_length=1)
    file: str = Field(
        default="",
        description="Recording relative to `data_dir` (e.g. `recordings/12k_drive_end_b007_0_118.npz`); "
        "empty when the recording is passed in memory.",
    )
    channel: Literal["de", "fe"] = Field(default="de", description="Accelerometer channel (drive end / fan end).")


class VibrationGatewayConfig(_ConnectionConfig):
    """A simulated vibration gateway replaying real bearing recordings as `f32le` blocks."""

    kind: Literal["mqtt-vibration-gateway"] = Field(default="mqtt-vibration-gateway", description="Simulator kind.")
    data_dir: Path = Field(
        default=Path("../shared/datasets/cwru_bearing"), description="CWRU-layout data set (labels.csv, recordings/)."
    )
    streams: list[GatewayStream] = Field(min_length=1, description="Simulated sensors, one topic each.")
    topic: str = Field(default="plant/line1/{stream}/vib", description="Topic template; fields `{stream}` and `{id}`.")
    block_s: float = Field(default=0.1, gt=0, le=10, description="Duration of one published block.")
    speed: float = Field(default=1.0, gt=0, le=1000, description="Replay speed: 1 is real time, 10 ten times faster.")
    qos: Literal[0, 1] = Field(default=0, description="Publish QoS of the blocks.")

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, v: str) -> str:
        return _check_template(v, {"stream": "s", "id": "g"}, "topic")


class VibrationGatewaySimulator:
    """Publishes each stream's recording block by block, paced at `speed` x real time, looping at the end.

    Each block carries user properties `rate_hz` and `t0_ns`; `t0_ns` follows the signal's own timeline from the
    start of the run, so consecutive blocks of a stream are contiguous whatever the replay speed.
    """

    def __init__(self, config: VibrationGatewayConfig, recordings: Mapping[str, Recording] | None = None) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._given = dict(recordings or {})
        self._conn: _Connection | None = None

    def _recordings(self) -> dict[str, Recording]:
        out: dict[str, Recording] = {}
        for s in self.config.streams:
            if s.stream in self._given:
                out[s.stream] = self._given[s.stream]
            elif s.file:
                out[s.stream] = load_recording(self.config.data_dir / s.file, s.channel)
            else:
                raise AdapterError(f"gateway {self.name}: stream {s.stream!r} has neither a file nor a recording")
        return out

    async def open(self) -> None:
        self._conn = _Connection(self.config, self.stats)
        await self._conn.open()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def run(self, duration_s: float | None = None) -> None:
        """Publish until cancelled, or for `duration_s` of wall time."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self._conn is None or self._conn.client is None:
            raise AdapterError(f"gateway {self.name}: run() before open()")
        client = self._conn.client
        recs = await asyncio.to_thread(self._recordings)
        cfg = self.config
        plan = [
            (
                cfg.topic.format(stream=name, id=cfg.id),
                rec,
                max(1, round(cfg.block_s * rec.fs_hz)),
            )
            for name, rec in recs.items()
        ]
        for _, rec, _n in plan:
            if rec.samples.size == 0:
                raise AdapterError(f"gateway {self.name}: empty recording")
        loop = asyncio.get_running_loop()
        start = begin = loop.time()
        start_ns = now_ns()
        pos = [0] * len(plan)
        k = 0
        while duration_s is None or loop.time() - begin < duration_s:
            for j, (topic, rec, n) in enumerate(plan):
                block = _take(rec.samples, pos[j], n)
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.UserProperty = [
                    ("rate_hz", repr(rec.fs_hz)),
                    ("t0_ns", str(start_ns + round(pos[j] / rec.fs_hz * 1e9))),
                    ("unit", "g"),
                ]
                info = client.publish(topic, encode_f32le(block), qos=cfg.qos, properties=props)
                self.stats["blocks" if info.rc == 0 else "unsent"] += 1
                pos[j] += n
            k += 1
            delay = start + k * cfg.block_s / cfg.speed - loop.time()
            if delay < -1.0:  # fell more than a second behind (loaded box): resume pacing from now
                self.stats["late"] += 1
                start, k = loop.time(), 0
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))


async def simulate_gateway(
    config: VibrationGatewayConfig,
    recordings: Mapping[str, Recording] | None = None,
    *,
    duration_s: float | None = None,
) -> Stats:
    """Run a simulated gateway until cancelled (or for `duration_s`) and return its counters."""
    sim = VibrationGatewaySimulator(config, recordings)
    await sim.open()
    try:
        await sim.run(duration_s)
    finally:
        await sim.close()
    return sim.stats


def _take(samples: npt.NDArray[np.float32], start: int, n: int) -> npt.NDArray[np.float32]:
    """`n` samples from `start`, wrapping around the end of the recording."""
    idx = (start + np.arange(n)) % samples.size
    return samples[idx]
