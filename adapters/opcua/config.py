"""OPC UA configuration: a machine's server read by the source (device kind `opcua`) and the results server
SCADA reads (sink kind `opcua-server`). Validation never touches the network or a certificate file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.base import DeviceConfigBase, SinkConfigBase, StrictModel
from adapters.types import Endpoint, QueueSize

__all__ = ["NAME", "OpcuaConfig", "OpcuaNode", "OpcuaServerConfig", "SecurityMode", "SecurityPolicy"]

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]

NODE_ID = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?[isgb]=.+$")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


class OpcuaNode(StrictModel):
    """One server variable read by the source."""

    name: str = Field(description="Stream suffix: readings are named `<device id>.<name>`.", pattern=NAME.pattern)
    node_id: str = Field(
        description="Node id in OPC UA string form, e.g. `ns=2;s=Weld.Current`, `ns=3;i=1042`, or by namespace "
        "URI `nsu=urn:vendor:plc;s=Weld.Current` (resolved through the server's namespace array on every "
        "connect, so it survives a server update that renumbers namespaces).",
        pattern=NODE_ID.pattern,
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
        "None",
        description="Security policy of the secure channel: `None`, `Basic256Sha256`, `Aes128Sha256RsaOaep` or "
        "`Aes256Sha256RsaPss` (the server must offer it).",
    )
    security_mode: SecurityMode = Field(
        "None", description="Message security: `None`, `Sign` or `SignAndEncrypt` (needs a policy other than None)."
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
                "security_policy None goes with security_mode None, any other policy with Sign/SignAndEncrypt"
            )
        return self


class OpcuaConfig(_Security, DeviceConfigBase):
    """An OPC UA server on a machine, read by `OpcuaSource` (device kind `opcua`)."""

    kind: Literal["opcua"] = Field(description="Device kind discriminator.")
    id: str = Field(description="Device id; prefix of every stream name.", pattern=NAME.pattern)
    endpoint: Endpoint = Field(
        "opc.tcp://127.0.0.1:4840", description="Server endpoint URL, `opc.tcp://host:port[/path]`."
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
    queue_size: QueueSize = Field(
        1000,
        description="Server-side queue per monitored item: changes kept between two publishes. 1 keeps only the "
        "latest change and silently loses the others.",
    )
    buffer_size: QueueSize = Field(
        10000, description="Readings buffered in the gateway before the pipeline takes them; overflow is counted."
    )
    nodes: list[OpcuaNode] = Field(min_length=1, description="Variables to read.")

    def stream_names(self) -> list[str]:
        return [f"{self.id}.{n.name}" for n in self.nodes]

    @model_validator(mode="after")
    def _check(self) -> OpcuaConfig:
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate node names: {', '.join(dupes)}")
        if self.security_policy != "None" and (self.client_certificate is None or self.client_private_key is None):
            raise ValueError(f"{self.security_policy} needs client_certificate and client_private_key")
        if self.password is not None and self.username is None:
            raise ValueError("password given without username")
        return self


class OpcuaUser(StrictModel):
    """A user the results server lets in (UserName token); every other name and password is refused."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@\-]+$", description="User name.")
    password: SecretStr = Field(description="Password; fill it from `${ENV}` or a systemd credential, never inline.")
    access: Literal["read", "write"] = Field(
        "read",
        description="`read`: browse, read, subscribe. `write`: also write the Value of variables that are writable "
        "(the results themselves are read-only for everyone). No client may add or delete nodes.",
    )


class OpcuaServerConfig(_Security, SinkConfigBase):
    """The results server that SCADA reads (sink kind `opcua-server`); see `adapters.opcua.sink` for its model."""

    kind: Literal["opcua-server"] = Field(description="Sink kind discriminator.")
    id: str = Field(description="Sink id.", pattern=NAME.pattern)
    endpoint: Endpoint = Field(
        "opc.tcp://127.0.0.1:4841",
        description="Listen endpoint `opc.tcp://host:port`; use 0.0.0.0 to serve other hosts.",
    )
    namespace_uri: str = Field("urn:edge-runtime:results", description="Namespace of the results variables.")
    application_uri: str = Field(
        "urn:edge-runtime:results-server",
        description="Server application URI; must match the URI in the server certificate's subjectAltName.",
    )
    certificate: Path | None = Field(None, description="Server certificate (DER or PEM), needed for any security.")
    private_key: Path | None = Field(None, description="Server private key (PEM), needed for any security.")
    users: list[OpcuaUser] = Field(
        default_factory=list,
        description="Users let in with a password; any other user name is refused. Without Basic256Sha256 the "
        "password crosses the network unencrypted.",
    )
    anonymous: Literal["read", "none"] = Field(
        "read", description="What an anonymous client may do: `read` (browse, read, subscribe) or `none` (refused)."
    )

    @model_validator(mode="after")
    def _check(self) -> OpcuaServerConfig:
        if self.security_policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"{self.security_policy} needs certificate and private_key")
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("duplicate user names")
        if self.anonymous == "none" and not self.users:
            raise ValueError("anonymous: none without users lets nobody in")
        return self
