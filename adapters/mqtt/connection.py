"""The one paho client per component: its network thread, reconnects and thread-safe hand-over to the loop.

paho runs the network loop on its own thread and reconnects by itself with exponential back-off
(`reconnect_min_s` .. `reconnect_max_s`); callbacks reach the event loop through `call_soon`, so components
never touch asyncio objects from paho's thread. paho is imported when a connection opens, not at validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from adapters.base import AdapterError, DeliveryError, Stats
from adapters.mqtt.config import MqttConnectionConfig
from adapters.supervise import BurstLog

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = ["Connection", "Inbox", "PublishAcks", "tls_context"]

log = logging.getLogger("adapters.mqtt")

M = TypeVar("M")


def tls_context(cfg: MqttConnectionConfig) -> ssl.SSLContext | None:
    """The TLS context of `cfg` (None without `tls_ca_file`); a missing or bad file fails here, at open."""
    if cfg.tls_ca_file is None:
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cfg.tls_ca_file))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise AdapterError(f"mqtt {cfg.id}: TLS CA file {cfg.tls_ca_file}: {exc}") from exc
    ctx.check_hostname = cfg.tls_check_hostname
    if cfg.tls_cert_file is not None and cfg.tls_key_file is not None:
        try:
            ctx.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_key_file))
        except (OSError, ValueError) as exc:
            raise AdapterError(
                f"mqtt {cfg.id}: TLS client certificate {cfg.tls_cert_file} / key {cfg.tls_key_file}: {exc}"
            ) from exc
    return ctx


class Connection:
    """One paho client on its own network thread; callbacks come back to the event loop thread-safely."""

    def __init__(
        self,
        config: MqttConnectionConfig,
        stats: Stats,
        *,
        on_connect: Callable[[paho.Client], None] | None = None,
        before_connect: Callable[[paho.Client], None] | None = None,
        max_queued: int = 0,
        subscriptions: Sequence[tuple[str, int]] = (),
    ) -> None:
        """`on_connect(client)` runs on paho's thread on every CONNACK, `before_connect(client)` once before the
        first CONNECT (e.g. to set a last will). `subscriptions` (topic filter, QoS) are subscribed after every
        CONNACK (after `on_connect`, which may add message callbacks), and `open()` returns only once the broker
        confirmed them the first time, so no message published after `open()` is missed."""
        self.config = config
        self.stats = stats
        self.connected = False
        self._subscriptions = list(subscriptions)
        self._first_suback: asyncio.Future[None] | None = None
        self._on_connect_hook = on_connect
        self._before_connect_hook = before_connect
        self.send_will_on_close = config.status_topic is not None  # a clean close publishes the last will too
        self._max_queued = max_queued
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first_connack: asyncio.Future[None] | None = None
        self._on_disconnect_hooks: list[Callable[[], None]] = []
        self._on_publish_hooks: list[Callable[[int, bool, str], None]] = []
        self.client: paho.Client | None = None
        self._tls: ssl.SSLContext | None = None

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
        self._first_suback = self._loop.create_future() if self._subscriptions else None
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5
        )
        client.enable_logger(logging.getLogger("adapters.mqtt.paho"))
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        self._tls = tls_context(cfg)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        status = cfg.status_topic_name()
        if status is not None:
            client.will_set(status, cfg.status_offline, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        if self._max_queued:
            client.max_inflight_messages_set(self._max_queued)
            client.max_queued_messages_set(self._max_queued)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        if self._before_connect_hook is not None:
            self._before_connect_hook(client)
        self.client = client
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)
        client.loop_start()  # its thread retries the first connection too, with the back-off above
        try:
            await asyncio.wait_for(asyncio.shield(self._first_connack), cfg.connect_timeout_s)
        except TimeoutError:
            await self.close()
            why = await asyncio.to_thread(self._tls_handshake_error) if self._tls is not None else None
            raise AdapterError(
                f"mqtt {cfg.id}: no connection to {cfg.host}:{cfg.port} within {cfg.connect_timeout_s} s"
                + (f" (TLS: {why})" if why else "")
            ) from None
        except AdapterError:
            await self.close()
            raise
        if self._first_suback is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._first_suback), cfg.connect_timeout_s)
            except TimeoutError:
                await self.close()
                raise AdapterError(f"mqtt {cfg.id}: no SUBACK within {cfg.connect_timeout_s} s") from None
            except AdapterError:
                await self.close()
                raise
        return client

    async def close(self) -> None:
        for fut in (self._first_connack, self._first_suback):
            if fut is not None and not fut.done():
                fut.cancel()
        client, self.client = self.client, None
        self.connected = False
        if client is None:
            return
        client.disable_logger()  # paho logs a spurious "not connected" error when its loop races the disconnect
        if self.send_will_on_close:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.reasoncodes import ReasonCode

            # MQTT 5 reason 4: the broker publishes the last will (`status_offline`) on this clean close too
            client.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        else:
            client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    def _tls_handshake_error(self) -> str | None:
        """Why a TLS handshake with the broker fails (paho's thread only retries silently), or None."""
        assert self._tls is not None
        cfg = self.config
        try:
            with (
                socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout_s) as sock,
                self._tls.wrap_socket(sock, server_hostname=cfg.host),
            ):
                return None
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            return str(exc)

    def _paho_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:  # paho thread
        if reason.is_failure:
            self.call_soon(self._refused, str(reason))
            return
        status = self.config.status_topic_name()
        if status is not None:
            client.publish(status, self.config.status_online, qos=1, retain=True)
        if self._on_connect_hook is not None:
            self._on_connect_hook(client)
        if self._subscriptions:
            client.on_subscribe = self._paho_subscribed
            client.subscribe(self._subscriptions)
        self.connected = True
        self.call_soon(self._connected)

    def _paho_subscribed(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:  # paho thread
        refused = [f"{topic}: {r}" for (topic, _), r in zip(self._subscriptions, reasons, strict=False) if r.is_failure]
        self.call_soon(self._subscribed, refused)

    def _subscribed(self, refused: list[str]) -> None:
        if refused:
            self.stats["subscribe_refused"] += 1
            log.warning("event=mqtt_subscribe_refused id=%s refused=%s", self.config.id, "; ".join(refused))
        else:
            self.stats["subscribed"] += 1  # on every (re)connect: the broker holds the subscriptions again
        fut = self._first_suback
        if fut is not None and not fut.done():
            if refused:
                fut.set_exception(AdapterError(f"mqtt {self.config.id}: subscription refused: {'; '.join(refused)}"))
            else:
                fut.set_result(None)

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


class Inbox(Generic[M]):
    """Messages from paho's thread to a source's `stream()`: `inbox.post(connection.call_soon, msg, topic)` on arrival,
    `await inbox.get()` on the loop. Bounded: a full inbox drops the message, counts it in `stats["dropped"]` and
    warns once per burst, so paho's thread never waits and a slow consumer cannot grow memory.

    Arrivals wait in a deque and the loop is woken once per batch, not once per message: each wake-up is a write to
    the loop's self-pipe and a select, which per message cost about a third of the MQTT ingest's CPU. The first
    message after a drain wakes the loop at once, so no message waits longer than before.
    """

    def __init__(self, size: int, stats: Stats, event: str, source: str) -> None:
        self.size = size
        self._queue: asyncio.Queue[M] = asyncio.Queue(size)
        self._dropped = BurstLog(event, stats, "dropped")
        self._source = source
        self._arrived: deque[tuple[M, str]] = deque()  # appended on paho's thread, drained on the loop
        self._wake_pending = False
        self.wakeups = 0  # drains on the loop: fewer than messages under load

    def post(self, call_soon: Callable[[Callable[[], None]], object], item: M, topic: str) -> None:
        """paho's thread: queue `item`; wake the loop with `call_soon` (`Connection.call_soon`) unless a wake-up is
        already on its way.

        The flag is set here and cleared by the loop before it drains, and the item is appended before the flag is
        read: an item is either seen by a drain that is still to run, or its post schedules a new one."""
        self._arrived.append((item, topic))
        if not self._wake_pending:
            self._wake_pending = True
            call_soon(self._drain)

    def _drain(self) -> None:
        self._wake_pending = False
        self.wakeups += 1
        arrived = self._arrived
        while arrived:
            self.put(*arrived.popleft())

    def put(self, item: M, topic: str) -> None:
        """On the loop: into the bounded queue, or counted as dropped."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._dropped(source=self._source, topic=topic, queue_size=self.size)

    async def get(self) -> M:
        return await self._queue.get()


class PublishAcks:
    """Publishes waiting for the broker's PUBACK (QoS 1) or PUBCOMP (QoS 2), by message id, for a sink whose
    `deliver` returns only once the broker holds the message. Wire `acknowledged` to `Connection.on_publish` and
    `fail_all` to a lost connection; counts `timeouts` and `failed` in the sink's stats."""

    def __init__(self, what: str, stats: Stats) -> None:
        self.what, self.stats = what, stats  # `what` names the sink in errors, e.g. "mqtt results"
        self._pending: dict[int, asyncio.Future[None]] = {}

    def acknowledged(self, mid: int, ok: bool, reason: str) -> None:
        fut = self._pending.get(mid)
        if fut is None or fut.done():
            return  # a late acknowledgement of a publish that already failed or timed out
        if ok:
            fut.set_result(None)
        else:
            fut.set_exception(DeliveryError(f"{self.what}: broker rejected the publish: {reason}"))

    def fail_all(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(DeliveryError(f"{self.what}: connection lost before acknowledgement"))

    async def wait(self, mid: int, timeout_s: float) -> None:
        """Call right after `publish` returned `mid`, before any other await, so the acknowledgement (scheduled on
        this loop) cannot be missed; raises DeliveryError on a refusal, a lost connection or a timeout."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[mid] = fut
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            self.stats["timeouts"] += 1
            raise DeliveryError(f"{self.what}: no acknowledgement within {timeout_s} s (mid {mid})") from None
        except DeliveryError:
            self.stats["failed"] += 1
            raise
        finally:
            self._pending.pop(mid, None)
