"""Security shared by the client source, the results server and the simulated machine: secure channels,
trust lists and user names, and the one way a server is built and stopped. asyncua loads when these are called."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adapters.opcua.config import OpcuaConfig, OpcuaUser, SecurityMode, SecurityPolicy

__all__ = [
    "AccessRules",
    "PasswordUsers",
    "ResultsUsers",
    "new_server",
    "secure_client",
    "stop_server",
    "trust_validator",
]

_PBKDF2_ROUNDS = 20_000  # a few ms per login on an ARM gateway: cheap for one SCADA, slow for guessing


async def trust_validator(trust_list: Sequence[Path], *, peer: Literal["client", "server"]) -> Any:
    """A certificate check against the trust list directories (time range + trusted chain)."""
    from asyncua.crypto.truststore import TrustStore
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

    store = TrustStore(list(trust_list), [])
    await store.load()
    opts = CertificateValidatorOptions
    role = opts.PEER_SERVER if peer == "server" else opts.PEER_CLIENT
    return CertificateValidator(opts.TIME_RANGE | opts.TRUSTED | role, store)


async def secure_client(client: Any, cfg: OpcuaConfig) -> None:
    """Apply a device's security policy, trust list and user identity to an asyncua client before connecting."""
    from asyncua import ua

    if cfg.security_policy != "None":
        from asyncua.crypto import security_policies

        await client.set_security(
            getattr(security_policies, f"SecurityPolicy{cfg.security_policy}"),
            certificate=str(cfg.client_certificate),
            private_key=str(cfg.client_private_key),
            server_certificate=str(cfg.server_certificate) if cfg.server_certificate else None,
            mode=getattr(ua.MessageSecurityMode, cfg.security_mode),
        )
    if cfg.trust_list:
        client.certificate_validator = await trust_validator(cfg.trust_list, peer="server")
    if cfg.username is not None:
        client.set_user(cfg.username)
        if cfg.password is not None:
            client.set_password(cfg.password.get_secret_value())


class PasswordUsers:
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


@dataclass(frozen=True, slots=True)
class _Account:
    salt: bytes
    digest: bytes
    access: Literal["read", "write"]


def _digest(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ROUNDS)


class ResultsUsers:
    """User manager of the results server: configured users with their password, anonymous clients read-only
    (or refused), everyone else refused. Only salted hashes are kept; the compare is constant-time, and an unknown
    name costs the same hash as a known one. Replaces asyncua's default manager, which lets `admin` in with any
    password as an administrator and every other name in as a user."""

    def __init__(self, users: Sequence[OpcuaUser], *, anonymous: Literal["read", "none"] = "read") -> None:
        self._accounts: dict[str, _Account] = {}
        for u in users:
            salt = os.urandom(16)
            self._accounts[u.name] = _Account(salt, _digest(u.password.get_secret_value(), salt), u.access)
        self._anonymous = anonymous
        self._decoy = _Account(os.urandom(16), b"", "read")

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None:
            return User(role=UserRole.Anonymous) if self._anonymous == "read" else None
        account = self._accounts.get(username, self._decoy)
        given = _digest(password or "", account.salt)
        if account is self._decoy or password is None or not hmac.compare_digest(given, account.digest):
            return None
        return User(role=UserRole.User if account.access == "write" else UserRole.Anonymous, name=username)


class AccessRules:
    """Which requests a session may make: read-only roles (anonymous, `access: read`) browse, read and subscribe;
    `access: write` users may also write Value attributes (the node's own access level still applies). Nobody may
    add or delete nodes or references, or write other attributes (access levels, names)."""

    def __init__(self) -> None:
        from asyncua import ua
        from asyncua.crypto.permission_rules import USER_TYPES, UserRole

        ids = ua.ObjectIds
        read_only = set(USER_TYPES) - {
            ids.WriteRequest_Encoding_DefaultBinary,
            ids.CallRequest_Encoding_DefaultBinary,
            ids.HistoryReadRequest_Encoding_DefaultBinary,
        }
        self._write = ua.NodeId(ids.WriteRequest_Encoding_DefaultBinary)
        self._value = ua.AttributeIds.Value
        read = {ua.NodeId(t) for t in read_only}
        self._allowed = {UserRole.Anonymous: read, UserRole.User: read | {self._write}, UserRole.Admin: read}

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        if action_type_id not in self._allowed.get(user.role, set()):
            return False
        if action_type_id == self._write:
            from asyncua import ua
            from asyncua.ua.ua_binary import struct_from_binary

            try:  # a shadow copy: the server decodes the same bytes again when it serves the request
                params = struct_from_binary(ua.WriteParameters, body.copy())
            except Exception:  # undecodable: refuse rather than guess
                return False
            return all(node.AttributeId == self._value for node in params.NodesToWrite)
        return True


async def new_server(
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
    access: tuple[ResultsUsers, AccessRules] | None = None,
) -> Any:
    """An initialised, not yet started asyncua server offering exactly the given security. `users` is a plain
    login list (simulated machines); `access` the results server's user manager and request rules."""
    from asyncua import Server, ua

    manager: Any = access[0] if access else PasswordUsers(users) if users else None
    server = Server(user_manager=manager)
    await server.init()
    server.set_endpoint(endpoint)
    server.set_server_name(name)
    await server.set_application_uri(application_uri)
    rules = access[1] if access else None
    if security_policy == "None":
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity], permission_ruleset=rules)
    else:
        policy = getattr(ua.SecurityPolicyType, f"{security_policy}_{security_mode}")
        server.set_security_policy([policy], permission_ruleset=rules)
        await server.load_certificate(str(certificate))
        await server.load_private_key(str(private_key))
    if trust_list:
        server.set_certificate_validator(await trust_validator(trust_list, peer="client"))
    if users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    elif access:
        server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
    return server


async def stop_server(server: Any) -> None:
    """Stop accepting before stopping: asyncua closes its listener last, so a client reconnecting meanwhile gets a
    session on a half-stopped server and keeps `stop()` waiting for that connection for ever."""
    listener = getattr(server.bserver, "_server", None)
    if listener is not None:
        listener.close()
    await server.stop()
