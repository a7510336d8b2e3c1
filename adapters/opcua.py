"""OPC UA: a client source for machines' servers, a results server for SCADA, and a simulated machine.

Source (`OpcuaSource`, kind `opcua`)
    One session per device. Nodes in `subscribe` mode share one subscription (publishing interval
    `publishing_interval_ms`); each monitored item asks for its node's `sampling_interval_ms` and a server-side queue
    of `queue_size` values, so a burst of changes between two publishes is queued rather than overwritten (a queue of
    one, the library default, silently keeps only the last change). Nodes in `poll` mode are read in one request per
    interval, for servers whose subscriptions are broken or limited. Every value becomes a `Reading`:
    `stream = f"{id}.{name}"`, `t_ns` = source timestamp, else server timestamp, else the gateway clock; the
    StatusCode becomes `quality` (Good -> good, Uncertain -> uncertain, Bad -> bad); arrays are shape `(n,)` and
    carry `rate_hz` when the node declares one (a waveform block).

Recovery
    A server restart must not leave a gateway silent. A socket closed by the server is noticed within 0.25 s; a
    server that stops answering without closing (cable, frozen PLC) is caught by asyncua's watchdog, which reads
    `Server/ServerStatus/State` every `watchdog_interval_s`, each read bounded by `timeout_s`. A closed socket, a
    failed watchdog read, a subscription status change to a Bad code (BadShutdown, BadTimeout), a failed poll or a
    dead background task ends `stream()` with `AdapterError` (after the readings received before the failure).
    `adapters.base.supervise` then closes the session and reopens it with back-off, which creates a new session and
    new subscriptions: a restarted server has forgotten the old ones, so nothing tries to transfer them.

Results server (`OpcuaServerSink`, kind `opcua-server`)
    Exposes each pipeline's latest result under `Objects/EdgeRuntime/<pipeline>/`, in the namespace
    `namespace_uri`, with string NodeIds `ns=<idx>;s=EdgeRuntime.<pipeline>.<Variable>` so a SCADA tag binds once
    and keeps working across restarts. The pipeline object appears on its first result. Variables (read-only, source
    timestamp = time of the input, i.e. the result's `t_ns`):

    ============  ========  ================================================================
    Variable      Type      Meaning
    ============  ========  ================================================================
    Seq           Int64     result sequence number, strictly increasing; written last
    Decision      String    the task's decision (e.g. ``ok``/``reject``/``alarm``), or empty
    Label         String    top label (``label``, else first of ``labels``), or empty
    Score         Double    score of the top label (``score``, else max of ``scores``), or NaN
    AnomalyScore  Double    ``anomaly_score`` for anomaly tasks, or NaN
    LatencyMs     Double    input-to-result latency in milliseconds
    Model         String    ``name@version+sha256-prefix`` of the model that decided
    Stream        String    the input stream the result is about
    TimestampUtc  DateTime  time of the input (``t_ns``)
    Json          String    the whole result as JSON, for fields the table does not name
    ============  ========  ================================================================

    Seq is written after the other variables, so a client that reacts to a Seq change reads a consistent set.

Simulator
    `simulate(config)` serves a device profile's nodes with plausible time-varying values (weld current, arc
    voltage, wire feed, temperatures, an array-valued thermal line); `running_simulator` is the same server as an
    async context manager for tests, on a free loopback port by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse, urlunparse

import numpy as np
import numpy.typing as npt
from pydantic import Field, SecretStr, model_validator

from adapters.base import AdapterError, DeliveryError, Reading, Stats, StrictModel, free_port, now_ns

__all__ = [
    "OpcuaConfig",
    "OpcuaNode",
    "OpcuaServerConfig",
    "OpcuaServerSink",
    "OpcuaSource",
    "SimulatedServer",
    "running_simulator",
    "simulate",
]

log = logging.getLogger("adapters.opcua")

SecurityPolicy = Literal["None", "Basic256Sha256"]
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]

_NODE_ID = re.compile(r"^(ns=\d+;)?[isgb]=.+$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class OpcuaNode(StrictModel):
    """One server variable read by the source."""

    name: str = Field(description="Stream suffix: readings are named `<device id>.<name>`.", pattern=_NAME.pattern)
    node_id: str = Field(
        description="Node id in OPC UA string form, e.g. `ns=2;s=Weld.Current` or `ns=3;i=1042`.",
        pattern=_NODE_ID.pattern,
    )
    mode: Literal["subscribe", "poll"] = Field(
        "subscribe",
        description="`subscribe`: data-change notifications (preferred); `poll`: periodic reads, for servers "
        "whose subscriptions are missing or limited.",
    )
    sampling_interval_ms: float = Field(
        100.0,
        ge=0,
        description="Subscribe: the server's sampling interval for this node (0 = as fast as the server can). "
        "Poll: the read interval (at least 10 ms).",
    )
    unit: str = Field("", description="Engineering unit copied into every reading, e.g. `A`, `V`, `degC`.")
    is_array: bool = Field(False, description="The value is a one-dimensional array (a waveform or a line scan).")
    rate_hz: float | None = Field(
        None,
        gt=0,
        description="For arrays that are waveform blocks: sample rate; readings then carry `rate_hz`.",
    )

    @model_validator(mode="after")
    def _rate_needs_array(self) -> OpcuaNode:
        if self.rate_hz is not None and not self.is_array:
            raise ValueError("rate_hz is only meaningful with is_array: true")
        return self


class _Security(StrictModel):
    """Secure channel options shared by the client source and the results server."""

    security_policy: SecurityPolicy = Field(
        "None", description="Security policy of the secure channel: `None` or `Basic256Sha256`."
    )
    security_mode: SecurityMode = Field(
        "None", description="Message security: `None`, `Sign` or `SignAndEncrypt` (needs Basic256Sha256)."
    )
    trust_list: list[Path] = Field(
        default_factory=list,
        description="Directories of trusted peer certificates (.der/.pem, CA or self-signed). Empty: the peer "
        "certificate is not checked against a trust list.",
    )

    @model_validator(mode="after")
    def _policy_matches_mode(self) -> _Security:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy None goes with security_mode None, Basic256Sha256 with Sign/SignAndEncrypt"
            )
        return self


class OpcuaConfig(_Security):
    """An OPC UA server on a machine, read by `OpcuaSource` (device kind `opcua`)."""

    kind: Literal["opcua"] = Field(description="Device kind discriminator.")
    id: str = Field(description="Device id; prefix of every stream name.", pattern=_NAME.pattern)
    endpoint: str = Field(
        "opc.tcp://127.0.0.1:4840",
        description="Server endpoint URL, `opc.tcp://host:port[/path]`.",
        pattern="^opc.tcp://",
    )
    application_uri: str = Field(
        "urn:edge-runtime:opcua-client",
        description="Client application URI; must match the URI in the client certificate's subjectAltName.",
    )
    client_certificate: Path | None = Field(None, description="Client certificate (DER or PEM) for Sign modes.")
    client_private_key: Path | None = Field(None, description="Client private key (PEM) for Sign modes.")
    server_certificate: Path | None = Field(
        None,
        description="Pinned server certificate. When absent it is taken from the server's endpoint list (and "
        "checked against `trust_list` if given).",
    )
    username: str | None = Field(None, description="User name for a UserName identity token; absent = anonymous.")
    password: SecretStr | None = Field(None, description="Password for `username`; fill from `${ENV}` or a credential.")
    timeout_s: float = Field(5.0, gt=0, description="Bound on every request to the server.")
    watchdog_interval_s: float = Field(
        1.0, gt=0, description="Interval of the server liveness read that detects a dead or restarted server."
    )
    session_timeout_s: float = Field(
        60.0, gt=0, description="Requested session timeout: how long the server keeps a session of a vanished client."
    )
    publishing_interval_ms: float = Field(100.0, gt=0, description="Subscription publishing interval.")
    queue_size: int = Field(
        1000,
        ge=1,
        description="Server-side queue per monitored item: changes kept between two publishes. 1 keeps only the "
        "latest change and silently loses the others.",
    )
    buffer_size: int = Field(
        10000, ge=1, description="Readings buffered in the gateway before the pipeline takes them; overflow is counted."
    )
    nodes: list[OpcuaNode] = Field(min_length=1, description="Variables to read.")

    @model_validator(mode="after")
    def _check(self) -> OpcuaConfig:
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate node names: {', '.join(dupes)}")
        if self.security_policy != "None" and (self.client_certificate is None or self.client_private_key is None):
            raise ValueError("Basic256Sha256 needs client_certificate and client_private_key")
        if self.password is not None and self.username is None:
            raise ValueError("password given without username")
        return self


class OpcuaServerConfig(_Security):
    """The results server that SCADA reads (sink kind `opcua-server`); see the module docstring for its model."""

    kind: Literal["opcua-server"] = Field(description="Sink kind discriminator.")
    id: str = Field(description="Sink id.", pattern=_NAME.pattern)
    endpoint: str = Field(
        "opc.tcp://127.0.0.1:4841",
        description="Listen endpoint `opc.tcp://host:port`; use 0.0.0.0 to serve other hosts.",
        pattern="^opc.tcp://",
    )
    namespace_uri: str = Field("urn:edge-runtime:results", description="Namespace of the results variables.")
    application_uri: str = Field(
        "urn:edge-runtime:results-server",
        description="Server application URI; must match the URI in the server certificate's subjectAltName.",
    )
    certificate: Path | None = Field(None, description="Server certificate (DER or PEM), needed for Basic256Sha256.")
    private_key: Path | None = Field(None, description="Server private key (PEM), needed for Basic256Sha256.")

    @model_validator(mode="after")
    def _check(self) -> OpcuaServerConfig:
        if self.security_policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError("Basic256Sha256 needs certificate and private_key")
        return self


# --------------------------------------------------------------------------------------------------- helpers


def _dt_to_ns(dt: datetime) -> int:
    """asyncua hands out naive UTC datetimes (100 ns ticks rounded to microseconds)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return ((dt - _EPOCH) // _US) * 1000


def _ns_to_dt(t_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=t_ns // 1000)


def _quality(status: Any) -> Literal["good", "uncertain", "bad"]:
    if status.is_good():
        return "good"
    if status.is_uncertain():
        return "uncertain"
    return "bad"


def _with_port(endpoint: str, port: int) -> str:
    url = urlparse(endpoint)
    return urlunparse(url._replace(netloc=f"{url.hostname or '127.0.0.1'}:{port}"))


async def _trust_validator(trust_list: Sequence[Path], *, peer: Literal["client", "server"]) -> Any:
    """A certificate check against the trust list directories (time range + trusted chain)."""
    from asyncua.crypto.truststore import TrustStore
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

    store = TrustStore(list(trust_list), [])
    await store.load()
    opts = CertificateValidatorOptions
    role = opts.PEER_SERVER if peer == "server" else opts.PEER_CLIENT
    return CertificateValidator(opts.TIME_RANGE | opts.TRUSTED | role, store)


@dataclass(frozen=True, slots=True)
class _Binding:
    """How one node's values become readings; resolved once at open so notifications only look it up."""

    stream: str
    unit: str
    is_array: bool
    rate_hz: float | None


class _Handler:
    """asyncua subscription handler; plain methods, so asyncua calls them inline without creating tasks."""

    def __init__(self, source: OpcuaSource) -> None:
        self._source = source

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self._source._on_value(node.nodeid, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        code = status.Status
        if not code.is_good():
            self._source._fail(AdapterError(f"subscription status {code.name}"))


# --------------------------------------------------------------------------------------------------- source


class OpcuaSource:
    """Reads a machine's OPC UA server; see the module docstring for timestamps, quality and recovery."""

    def __init__(self, config: OpcuaConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._client: Any = None
        self._queue: asyncio.Queue[Reading | None] = asyncio.Queue(config.buffer_size)
        self._error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bindings: dict[Any, _Binding] = {}
        self._dropping = False
        self._malformed = False

    async def open(self) -> None:
        from asyncua import Client, ua

        cfg = self.config
        self._queue = asyncio.Queue(cfg.buffer_size)
        self._error = None
        client = Client(url=cfg.endpoint, timeout=cfg.timeout_s, watchdog_intervall=cfg.watchdog_interval_s)
        client.name = client.description = f"edge-runtime {cfg.id}"
        client.application_uri = cfg.application_uri
        client.session_timeout = int(cfg.session_timeout_s * 1000)
        if cfg.security_policy == "Basic256Sha256":
            from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

            await client.set_security(
                SecurityPolicyBasic256Sha256,
                certificate=str(cfg.client_certificate),
                private_key=str(cfg.client_private_key),
                server_certificate=str(cfg.server_certificate) if cfg.server_certificate else None,
                mode=getattr(ua.MessageSecurityMode, cfg.security_mode),
            )
        if cfg.trust_list:
            client.certificate_validator = await _trust_validator(cfg.trust_list, peer="server")
        if cfg.username is not None:
            client.set_user(cfg.username)
            if cfg.password is not None:
                client.set_password(cfg.password.get_secret_value())
        client.connection_lost_callback = self._on_connection_lost
        self._client = client
        try:
            await client.connect()
        except Exception as exc:
            self._client = None  # connect() cleaned up after itself
            raise AdapterError(f"cannot connect to {cfg.endpoint}: {exc!r}") from exc
        nodes = {n.name: client.get_node(n.node_id) for n in cfg.nodes}
        self._bindings = {
            nodes[n.name].nodeid: _Binding(f"{cfg.id}.{n.name}", n.unit, n.is_array, n.rate_hz) for n in cfg.nodes
        }
        subscribed = [n for n in cfg.nodes if n.mode == "subscribe"]
        if subscribed:
            await self._subscribe(client, subscribed, nodes)
        polled: dict[float, list[OpcuaNode]] = defaultdict(list)
        for n in cfg.nodes:
            if n.mode == "poll":
                polled[max(n.sampling_interval_ms, 10.0)].append(n)
        for interval_ms, group in polled.items():
            self._tasks.append(asyncio.create_task(self._poll(interval_ms / 1000, [nodes[n.name] for n in group])))
        self._tasks.append(asyncio.create_task(self._watch()))

    async def _subscribe(self, client: Any, subscribed: list[OpcuaNode], nodes: Mapping[str, Any]) -> None:
        from asyncua import ua

        sub = await client.create_subscription(self.config.publishing_interval_ms, _Handler(self))
        by_interval: dict[float, list[OpcuaNode]] = defaultdict(list)
        for n in subscribed:
            by_interval[n.sampling_interval_ms].append(n)
        for interval_ms, group in by_interval.items():
            handles = await sub.subscribe_data_change(
                [nodes[n.name] for n in group], queuesize=self.config.queue_size, sampling_interval=interval_ms
            )
            for n, handle in zip(group, handles, strict=True):
                if isinstance(handle, ua.StatusCode):  # the rest of the device still flows
                    self.stats["node_errors"] += 1
                    log.error(
                        "event=opcua_node_rejected device=%s node=%s status=%s", self.name, n.node_id, handle.name
                    )

    def stream(self) -> AsyncIterator[Reading]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Reading]:
        if self._client is None:
            raise AdapterError(f"{self.name}: stream() before open()")
        queue = self._queue
        while True:
            item = await queue.get()
            if item is None:  # the failure marker, queued after every reading received before the failure
                raise AdapterError(f"{self.name}: connection lost: {self._error!r}") from self._error
            yield item

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # unlike suppress(), lets our own cancellation through
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), self.config.timeout_s)
            except Exception as exc:  # the server is usually gone when we get here
                log.debug("event=opcua_disconnect_failed device=%s error=%r", self.name, exc)

    # -- callbacks and background tasks ------------------------------------------------------------------------

    def _on_value(self, nodeid: Any, dv: Any) -> None:
        binding = self._bindings.get(nodeid)
        if binding is None:
            return
        self._put(self._reading(binding, dv))

    def _reading(self, b: _Binding, dv: Any) -> Reading:
        quality = _quality(dv.StatusCode)
        ts = dv.SourceTimestamp or dv.ServerTimestamp
        t_ns = _dt_to_ns(ts) if ts is not None else now_ns()
        raw = dv.Value.Value if dv.Value is not None else None
        value: npt.NDArray[Any]
        if raw is None:
            value = np.empty(0) if b.is_array else np.array(np.nan)
            quality = "bad"
        else:
            try:
                value = np.asarray(raw)
            except (TypeError, ValueError) as exc:  # an ExtensionObject or other type numpy cannot hold
                self._count_malformed(b.stream, exc)
                value, quality = np.array(np.nan), "bad"
            if b.is_array and value.ndim != 1:
                value = value.reshape(-1)
        return Reading(b.stream, t_ns, value, quality, b.unit, b.rate_hz if b.is_array else None)

    def _count_malformed(self, stream: str, exc: Exception) -> None:
        self.stats["malformed"] += 1
        if not self._malformed:
            self._malformed = True
            log.warning("event=opcua_malformed_value stream=%s error=%r", stream, exc)

    def _put(self, reading: Reading) -> None:
        try:
            self._queue.put_nowait(reading)
            self._dropping = False
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            if not self._dropping:
                self._dropping = True
                log.warning("event=opcua_buffer_full device=%s size=%d", self.name, self.config.buffer_size)

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        log.warning("event=opcua_connection_lost device=%s error=%r", self.name, exc)
        if self._queue.full():  # make room for the marker: the newest readings are worth less than recovery
            self._queue.get_nowait()
            self.stats["dropped"] += 1
        self._queue.put_nowait(None)

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._fail(exc)

    async def _watch(self) -> None:
        """Detect a closed socket at once, and surface failures of asyncua's background tasks.

        asyncua notices a socket closed by a stopping server only when its next request times out (watchdog
        interval + `timeout_s`); the socket state is known immediately, so it is checked here every 0.25 s.
        """
        period = min(0.25, self.config.watchdog_interval_s)
        while self._error is None:
            await asyncio.sleep(period)
            protocol = self._client.uaclient.protocol
            if protocol is None or protocol.state == "closed":
                self._fail(ConnectionError("socket closed by the server"))
                return
            try:
                await self._client.check_connection()
            except Exception as exc:
                self._fail(exc)

    async def _poll(self, interval_s: float, nodes: list[Any]) -> None:
        client = self._client
        bindings = [self._bindings[n.nodeid] for n in nodes]
        next_t = time.monotonic()
        while True:
            try:
                values = await client.read_attributes(nodes)
            except Exception as exc:
                self._fail(exc)
                return
            for b, dv in zip(bindings, values, strict=True):
                self._put(self._reading(b, dv))
            next_t += interval_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind: skip missed ticks instead of bursting
                next_t = time.monotonic()
                delay = 0.0
            await asyncio.sleep(delay)


# --------------------------------------------------------------------------------------------------- servers


async def _new_server(
    endpoint: str,
    *,
    name: str,
    application_uri: str,
    security_policy: SecurityPolicy = "None",
    security_mode: SecurityMode = "None",
    certificate: Path | None = None,
    private_key: Path | None = None,
    trust_list: Sequence[Path] = (),
    users: Mapping[str, str] | None = None,
) -> Any:
    """An initialised, not yet started asyncua server with the given security."""
    from asyncua import Server, ua

    server = Server(user_manager=_PasswordUsers(users) if users else None)
    await server.init()
    server.set_endpoint(endpoint)
    server.set_server_name(name)
    await server.set_application_uri(application_uri)
    if security_policy == "None":
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    else:
        policy = getattr(ua.SecurityPolicyType, f"Basic256Sha256_{security_mode}")
        server.set_security_policy([policy])
        await server.load_certificate(str(certificate))
        await server.load_private_key(str(private_key))
    if trust_list:
        server.set_certificate_validator(await _trust_validator(trust_list, peer="client"))
    if users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    return server


async def _stop_server(server: Any) -> None:
    """Stop accepting before stopping: asyncua closes its listener last, so a client reconnecting meanwhile gets a
    session on a half-stopped server and keeps `stop()` waiting for that connection for ever."""
    listener = getattr(server.bserver, "_server", None)
    if listener is not None:
        listener.close()
    await server.stop()


class _PasswordUsers:
    """Server user manager checking user names and passwords (simulated machines that require a login)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


_RESULT_VARS: tuple[tuple[str, str], ...] = (
    ("Decision", "String"),
    ("Label", "String"),
    ("Score", "Double"),
    ("AnomalyScore", "Double"),
    ("LatencyMs", "Double"),
    ("Model", "String"),
    ("Stream", "String"),
    ("TimestampUtc", "DateTime"),
    ("Json", "String"),
    ("Seq", "Int64"),  # last: written after the others
)


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _result_values(result: Mapping[str, Any]) -> dict[str, Any]:
    """The information model's values for one result (see the module docstring)."""
    label = result.get("label")
    if label is None:
        labels = result.get("labels")
        label = labels[0] if isinstance(labels, Sequence) and not isinstance(labels, str) and labels else ""
    score = result.get("score")
    if score is None:
        scores = result.get("scores")
        if isinstance(scores, Mapping):
            scores = list(scores.values())
        if isinstance(scores, Sequence) and not isinstance(scores, str) and scores:
            score = max(_float(s) for s in scores)
    decision = result.get("decision")
    return {
        "Decision": "" if decision is None else str(decision),
        "Label": str(label),
        "Score": _float(score),
        "AnomalyScore": _float(result.get("anomaly_score")),
        "LatencyMs": _float(result.get("latency_ns", math.nan)) / 1e6,
        "Model": str(result.get("model", "")),
        "Stream": str(result.get("stream", "")),
        "TimestampUtc": _ns_to_dt(int(result["t_ns"])),
        "Json": json.dumps(result, default=_json_default, separators=(",", ":")),
        "Seq": int(result["seq"]),
    }


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    return str(obj)


class OpcuaServerSink:
    """Serves each pipeline's latest result to SCADA as OPC UA variables (information model: module docstring)."""

    def __init__(self, config: OpcuaServerConfig) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._server: Any = None
        self._ns = 0
        self._root: Any = None
        self._pipelines: dict[str, dict[str, Any]] = {}
        self._malformed = False

    @property
    def namespace_index(self) -> int:
        """Index of `namespace_uri` on the running server."""
        return self._ns

    async def open(self) -> None:
        from asyncua import ua

        cfg = self.config
        server = await _new_server(
            cfg.endpoint,
            name=f"edge-runtime results {cfg.id}",
            application_uri=cfg.application_uri,
            security_policy=cfg.security_policy,
            security_mode=cfg.security_mode,
            certificate=cfg.certificate,
            private_key=cfg.private_key,
            trust_list=cfg.trust_list,
        )
        self._ns = await server.register_namespace(cfg.namespace_uri)
        self._root = await server.nodes.objects.add_object(
            ua.NodeId("EdgeRuntime", self._ns), ua.QualifiedName("EdgeRuntime", self._ns)
        )
        self._pipelines = {}
        try:
            await server.start()
        except Exception as exc:
            raise AdapterError(f"cannot serve results on {cfg.endpoint}: {exc!r}") from exc
        self._server = server
        log.info("event=opcua_results_serving sink=%s endpoint=%s", self.name, cfg.endpoint)

    async def _add_pipeline(self, pipeline: str) -> dict[str, Any]:
        from asyncua import ua

        ns = self._ns
        obj = await self._root.add_object(ua.NodeId(f"EdgeRuntime.{pipeline}", ns), ua.QualifiedName(pipeline, ns))
        nodes: dict[str, Any] = {}
        for var, vtype in _RESULT_VARS:
            initial = {"String": "", "Double": math.nan, "Int64": -1, "DateTime": _EPOCH}[vtype]
            node = await obj.add_variable(
                ua.NodeId(f"EdgeRuntime.{pipeline}.{var}", ns),
                ua.QualifiedName(var, ns),
                ua.Variant(initial, getattr(ua.VariantType, vtype)),
            )
            nodes[var] = node.nodeid
        self._pipelines[pipeline] = nodes
        return nodes

    async def deliver(self, result: Mapping[str, Any]) -> None:
        from asyncua import ua

        if self._server is None:
            raise DeliveryError(f"{self.name}: results server is not open")
        try:
            pipeline = str(result["pipeline"])
            if not _NAME.match(pipeline):
                raise ValueError(f"pipeline name {pipeline!r} is not a valid node name")
            values = _result_values(result)
        except (KeyError, TypeError, ValueError) as exc:  # a bad result must not block the outbox behind it
            self.stats["malformed"] += 1
            if not self._malformed:
                self._malformed = True
                log.warning("event=opcua_malformed_result sink=%s error=%r", self.name, exc)
            return
        self._malformed = False
        nodes = self._pipelines.get(pipeline) or await self._add_pipeline(pipeline)
        source_ts = values["TimestampUtc"]
        server_ts = datetime.now(UTC)
        for var, vtype in _RESULT_VARS:
            dv = ua.DataValue(
                ua.Variant(values[var], getattr(ua.VariantType, vtype)),
                SourceTimestamp=source_ts,
                ServerTimestamp=server_ts,
            )
            await self._server.write_attribute_value(nodes[var], dv)
        self.stats["delivered"] += 1

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await _stop_server(server)


# --------------------------------------------------------------------------------------------------- simulator


@dataclass(slots=True)
class SimulatedServer:
    """A running simulated machine: its endpoint and a way to set a node's value from a test."""

    server: Any
    endpoint: str
    nodes: dict[str, Any] = field(default_factory=dict)  # node name -> asyncua Node

    async def write(self, name: str, value: Any, *, status: str = "Good", source_t_ns: int | None = None) -> None:
        """Set a node's value with a status code name (e.g. `UncertainLastUsableValue`) and a source time."""
        from asyncua import ua

        node = self.nodes[name]
        vtype = await node.read_data_type_as_variant_type()
        if isinstance(value, np.ndarray):
            value = value.tolist()
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            StatusCode_=ua.StatusCode(getattr(ua.StatusCodes, status)),
            SourceTimestamp=_ns_to_dt(source_t_ns if source_t_ns is not None else now_ns()),
            ServerTimestamp=datetime.now(UTC),
        )
        await self.server.write_attribute_value(node.nodeid, dv)

    async def stop(self) -> None:
        await _stop_server(self.server)


_THERMAL_POINTS = 32


def _sim_value(node: OpcuaNode, t: float, rng: np.random.Generator) -> float | list[float]:
    """Plausible values for a 2015-era MIG/MAG weld cell, picked by unit and name."""
    key = f"{node.name} {node.unit}".lower()
    arc_on = (t % 6.0) < 4.0  # 4 s weld, 2 s index
    if node.is_array:
        x = np.linspace(0.0, 1.0, _THERMAL_POINTS)
        centre = (t % 6.0) / 6.0
        line = 25.0 + (380.0 if arc_on else 120.0) * np.exp(-(((x - centre) / 0.08) ** 2))
        return [float(v) for v in line + rng.normal(0.0, 1.5, x.size)]
    if "current" in key or node.unit == "A":
        return (180.0 + 8.0 * math.sin(2 * math.pi * 3.0 * t) + float(rng.normal(0, 2.0))) if arc_on else 0.0
    if "voltage" in key or node.unit == "V":
        return (24.0 + 0.6 * math.sin(2 * math.pi * 3.0 * t) + float(rng.normal(0, 0.2))) if arc_on else 0.0
    if "wire" in key or "m/min" in key:
        return (8.5 + float(rng.normal(0, 0.05))) if arc_on else 0.0
    if "temp" in key or "degc" in key or "°c" in key:
        base = 45.0 if "torch" in key or "cool" in key else -18.0  # unheated hall in winter
        return base + 3.0 * math.sin(2 * math.pi * t / 120.0) + float(rng.normal(0, 0.1))
    return float(math.sin(2 * math.pi * t / 10.0))


async def _start_simulator(
    config: OpcuaConfig,
    port: int | None,
    security_mode: SecurityMode,
    certificate: Path | None,
    private_key: Path | None,
    trust_list: Sequence[Path],
    users: Mapping[str, str] | None,
) -> SimulatedServer:
    from asyncua import ua

    endpoint = _with_port(config.endpoint, port) if port is not None else config.endpoint
    server = await _new_server(
        endpoint,
        name=f"edge-runtime simulated {config.id}",
        application_uri=f"urn:edge-runtime:sim:{config.id}",
        security_policy="None" if security_mode == "None" else "Basic256Sha256",
        security_mode=security_mode,
        certificate=certificate,
        private_key=private_key,
        trust_list=trust_list,
        users=users,
    )
    rng = np.random.default_rng(0)
    sim = SimulatedServer(server, endpoint)
    for n in config.nodes:
        nodeid = ua.NodeId.from_string(n.node_id)
        while len(await server.get_namespace_array()) <= nodeid.NamespaceIndex:
            await server.register_namespace(
                f"urn:edge-runtime:sim:{config.id}:ns{len(await server.get_namespace_array())}"
            )
        initial = _sim_value(n, 0.0, rng)
        variant = ua.Variant(initial, ua.VariantType.Double)
        sim.nodes[n.name] = await server.nodes.objects.add_variable(
            nodeid, ua.QualifiedName(n.name, nodeid.NamespaceIndex), variant
        )
    await server.start()
    return sim


@contextlib.asynccontextmanager
async def running_simulator(
    config: OpcuaConfig,
    *,
    port: int | None = None,
    animate: bool = False,
    security_mode: SecurityMode = "None",
    certificate: Path | None = None,
    private_key: Path | None = None,
    trust_list: Sequence[Path] = (),
    users: Mapping[str, str] | None = None,
) -> AsyncIterator[SimulatedServer]:
    """A simulated machine serving `config.nodes` on loopback (a free port unless given), stopped on exit.

    `animate` updates the values continuously as `simulate` does; otherwise tests set them with `write`.
    Security arguments make the server require a policy, trust only `trust_list` and check `users`' passwords.
    """
    if port is None:
        port = free_port()
    sim = await _start_simulator(config, port, security_mode, certificate, private_key, trust_list, users)
    task = asyncio.create_task(_animate(sim, config)) if animate else None
    try:
        yield sim
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await sim.stop()


async def _animate(sim: SimulatedServer, config: OpcuaConfig) -> None:
    from asyncua import ua

    rng = np.random.default_rng(1)
    interval_s = max(0.02, min(n.sampling_interval_ms for n in config.nodes) / 1000)
    t0 = time.monotonic()
    while True:
        t = time.monotonic() - t0
        ts = datetime.now(UTC)
        for n in config.nodes:
            dv = ua.DataValue(
                ua.Variant(_sim_value(n, t, rng), ua.VariantType.Double), SourceTimestamp=ts, ServerTimestamp=ts
            )
            await sim.server.write_attribute_value(sim.nodes[n.name].nodeid, dv)
        await asyncio.sleep(interval_s)


async def simulate(config: OpcuaConfig, *, port: int | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve a device profile's nodes with plausible values until `stop` is set (or for ever)."""
    async with running_simulator(
        config, port=port if port is not None else urlparse(config.endpoint).port, animate=True
    ) as sim:
        log.info("event=opcua_simulating device=%s endpoint=%s nodes=%d", config.id, sim.endpoint, len(sim.nodes))
        await (stop or asyncio.Event()).wait()
