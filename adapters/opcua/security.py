"""Security shared by the client source, the results server and the simulated machine: secure channels,
trust lists and user names, and the one way a server is built and stopped. asyncua loads when these are called."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from adapters.opcua.config import OpcuaConfig, SecurityMode, SecurityPolicy

__all__ = ["PasswordUsers", "new_server", "secure_client", "stop_server", "trust_validator"]


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
) -> Any:
    """An initialised, not yet started asyncua server offering exactly the given security."""
    from asyncua import Server, ua

    server = Server(user_manager=PasswordUsers(users) if users else None)
    await server.init()
    server.set_endpoint(endpoint)
    server.set_server_name(name)
    await server.set_application_uri(application_uri)
    if security_policy == "None":
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    else:
        policy = getattr(ua.SecurityPolicyType, f"{security_policy}_{security_mode}")
        server.set_security_policy([policy])
        await server.load_certificate(str(certificate))
        await server.load_private_key(str(private_key))
    if trust_list:
        server.set_certificate_validator(await trust_validator(trust_list, peer="client"))
    if users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    return server


async def stop_server(server: Any) -> None:
    """Stop accepting before stopping: asyncua closes its listener last, so a client reconnecting meanwhile gets a
    session on a half-stopped server and keeps `stop()` waiting for that connection for ever."""
    listener = getattr(server.bserver, "_server", None)
    if listener is not None:
        listener.close()
    await server.stop()
