"""Test and benchmark helpers: a PostgreSQL per session, a database per test, in-process servers.

asyncpg's own test base does the same: one cluster per session (a private one unless
DATABASE_URL or PGHOST points at a server), migrations once into a template database, and a
fresh copy of the template for each test.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import inspect
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phiseal_dev import dbroles
from phiseal_dev.localpg import LocalPostgres
from phiseal_dev.pki import DevPki
from phiseal_dev.tokens import DevSigningKey, TokenMinter
from services.common.security.auth import Role
from services.common.security.authn import AUTHORIZATION_HEADER
from services.common.security.authz import WILDCARD
from services.common.security.tls import (
    CLIENT_IDENTITIES,
    SERVICE_IDENTITIES,
    TlsFiles,
    channel_credentials,
    server_name,
)
from services.common.server.grpc_server import GrpcServer
from services.migrate import migrate_all

T = TypeVar("T")

DB_SERVICES = ("keysvc", "policysvc", "auditsvc")
ALL_SERVICES = ("keysvc", "policysvc", "encryptsvc", "auditsvc")
# Identities that exist only in tests: a certificate from our CA that no allow-list names.
TEST_IDENTITIES = ("stranger",)
DEV_ADMIN = "dev-admin"


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    timeout: float = 20.0,  # noqa: ASYNC109 - a deadline that reports the last value seen
    interval: float = 0.01,
    what: str = "",
) -> T:
    """Polls ``check`` (sync or async) until it returns a truthy value, and returns that value.

    A check may also raise ``AssertionError`` to mean "not yet". The one way tests wait for
    something to happen: never a fixed sleep, which is either too short on a loaded machine or
    wasted time on an idle one. On timeout it raises ``TimeoutError`` carrying the last value
    (or chains the last ``AssertionError``), so the failure says what was still wrong.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        failure: AssertionError | None = None
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[no-any-return]
        except AssertionError as exc:
            failure, result = exc, None
        if loop.time() >= deadline:
            message = f"not true within {timeout}s: {what or getattr(check, '__name__', check)}"
            if failure is not None:
                raise TimeoutError(f"{message}; last: {failure}") from failure
            raise TimeoutError(f"{message}; last value: {result!r}")
        await asyncio.sleep(interval)


class ManualClock:
    """An injectable clock that moves only when a test says so (``advance``)."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@dataclass(frozen=True)
class DevSecrets:
    """A development secrets folder as `make run` creates it: CA, certificates, token key."""

    folder: Path
    minter: TokenMinter

    @classmethod
    def create(
        cls, folder: Path, identities: Sequence[str] = SERVICE_IDENTITIES + CLIENT_IDENTITIES
    ) -> DevSecrets:
        DevPki(folder).ensure(identities)
        key = DevSigningKey(folder)
        key.ensure()
        return cls(folder=folder, minter=key.minter())

    @property
    def ca_pem(self) -> bytes:
        return (self.folder / "ca.pem").read_bytes()

    def files(self, identity: str) -> TlsFiles:
        return TlsFiles.in_dir(self.folder, identity)

    def token(
        self, subject: str, memberships: Mapping[str, Sequence[Role | str]], ttl: int = 3600
    ) -> str:
        return self.minter.mint(subject, memberships, ttl_seconds=ttl)

    def admin_token(self, subject: str = DEV_ADMIN) -> str:
        """Admin and auditor in every workspace: what `phiseal-token --admin` mints."""
        return self.token(subject, {WILDCARD: [Role.ADMIN, Role.AUDITOR]})

    def tokens(self, workspace_id: str, role: Role, subject: str = "alice") -> TokenCases:
        return TokenCases(self, workspace_id, role, subject)


# Below the role: the next rung down the ladder (auditor, beside it, lacks every other role).
_SMALLER = {
    Role.VIEWER: Role.AUDITOR,
    Role.EDITOR: Role.VIEWER,
    Role.ADMIN: Role.EDITOR,
    Role.AUDITOR: Role.EDITOR,
}


@dataclass(frozen=True)
class TokenCases:
    """The credentials of the RPC x credential matrix, for one workspace and the role needed.

    ``None`` means no ``authorization`` metadata at all.
    """

    secrets: DevSecrets
    workspace_id: str
    role: Role
    subject: str = "alice"

    def none(self) -> str | None:
        return None

    def malformed(self) -> str:
        return "not-a-jwt"

    def bad_signature(self) -> str:
        other = TokenMinter(Ed25519PrivateKey.generate())
        return other.mint(self.subject, {self.workspace_id: [self.role]})

    def expired(self) -> str:
        return self.secrets.minter.mint(
            self.subject, {self.workspace_id: [self.role]}, now=time.time() - 7200
        )

    def other_workspace(self) -> str:
        return self.secrets.token(self.subject, {f"{self.workspace_id}_other": [Role.ADMIN]})

    def too_small_role(self) -> str:
        # Holds the smaller role here and the needed one elsewhere: the domain's check decides.
        return self.secrets.token(
            self.subject,
            {
                self.workspace_id: [_SMALLER[self.role]],
                f"{self.workspace_id}_other": [self.role],
            },
        )

    def allowed(self) -> str:
        return self.secrets.token(self.subject, {self.workspace_id: [self.role]})

    def all(self) -> dict[str, str | None]:
        """Every case by name, in the matrix's order."""
        return {
            "no credentials": self.none(),
            "malformed": self.malformed(),
            "bad signature": self.bad_signature(),
            "expired": self.expired(),
            "other workspace": self.other_workspace(),
            "too small a role": self.too_small_role(),
            "allowed": self.allowed(),
        }


_session_secrets: DevSecrets | None = None


def session_secrets() -> DevSecrets:
    """The process's development secrets, created once in a temporary folder."""
    global _session_secrets
    if _session_secrets is None:
        folder = Path(tempfile.mkdtemp(prefix="phiseal-test-secrets-"))
        atexit.register(shutil.rmtree, folder, True)
        _session_secrets = DevSecrets.create(
            folder / "dev-secrets", SERVICE_IDENTITIES + CLIENT_IDENTITIES + TEST_IDENTITIES
        )
    return _session_secrets


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token``."""
    return ((AUTHORIZATION_HEADER, f"Bearer {token}"),)


def person(subject: str, memberships: Mapping[str, Sequence[Role | str]] | None = None) -> Any:
    """Call metadata for a person: by default admin and auditor everywhere, as ``subject``."""
    secrets = session_secrets()
    roles = memberships if memberships is not None else {WILDCARD: [Role.ADMIN, Role.AUDITOR]}
    return bearer(secrets.token(subject, roles, ttl=6 * 3600))


class _DefaultToken:
    """Adds ``authorization`` to calls that bring none (a call's own token wins)."""

    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if not any(k == AUTHORIZATION_HEADER for k, _ in metadata):
            metadata.append((AUTHORIZATION_HEADER, self._value))
        return details._replace(metadata=metadata)


# grpc.aio files an interceptor under the first call type it implements only (an elif
# chain), so each call type needs its own object.
class _DefaultTokenUnary(_DefaultToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)


class _DefaultTokenStream(_DefaultToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)


_ADMIN: Any = object()  # channel()'s default: the development admin token


def person_channel(
    address: str, token: str | None = _ADMIN, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """TLS to a service port trusting the session CA, as a person: ``token`` on every call
    that brings no ``authorization`` (default: the development admin; None: no credentials)."""
    secrets = session_secrets()
    credentials = grpc.ssl_channel_credentials(root_certificates=secrets.ca_pem)
    if token is _ADMIN:
        token = secrets.admin_token()
    interceptors: list[Any] = (
        [] if token is None else [_DefaultTokenUnary(token), _DefaultTokenStream(token)]
    )
    return grpc.aio.secure_channel(
        address, credentials, options=list(options), interceptors=interceptors
    )


def peer_channel(
    address: str,
    identity: str,
    options: Sequence[tuple[str, Any]] = (),
    *,
    service: str | None = None,
) -> grpc.aio.Channel:
    """Mutual TLS to a peer port presenting ``identity``'s session certificate; with
    ``service``, the server must prove to be that service (as services' own channels do)."""
    credentials = channel_credentials(session_secrets().files(identity))
    names = [] if service is None else [("grpc.ssl_target_name_override", server_name(service))]
    return grpc.aio.secure_channel(address, credentials, options=[*options, *names])


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@dataclass
class PgCluster:
    """The PostgreSQL server for a test session."""

    admin_url: str
    local: LocalPostgres | None = None
    template: str = ""

    @classmethod
    def start(cls) -> PgCluster:
        url = os.environ.get("DATABASE_URL")
        if not url and os.environ.get("PGHOST"):
            url = "postgresql:///postgres"  # libpq-style: asyncpg reads PG* variables
        if url:
            return cls(admin_url=url)
        tmp = Path(tempfile.mkdtemp(prefix="phiseal-test-pg-"))
        local = LocalPostgres(tmp / "data")
        return cls(admin_url=local.start(), local=local)

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

    async def build_template(self) -> str:
        """A database holding every service's migrations, copied for each test.

        Set up as production is: the owner role runs the migrations and owns the schemas;
        each service later logs in as its own role that owns nothing (``service_env``).
        """
        name = f"phiseal_tpl_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        await dbroles.ensure_roles(self.url(name), name)
        await migrate_all(dbroles.owner_url(self.url(name)), DB_SERVICES)
        self.template = name
        return name

    async def create_database(self) -> str:
        """A fresh copy of the template; returns its URL."""
        name = f"phiseal_t_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await admin.close()
        return self.url(name)

    async def empty_schema(self, url: str, schema: str) -> None:
        """Empties every table of ``schema`` in ``url``'s database but its migration record.

        Much cheaper than a fresh database for tests that start from an empty schema (the store
        contract suites); as a superuser in replica mode, so append-only triggers stay quiet.
        """
        con = await asyncpg.connect(url)
        try:
            tables = await con.fetch(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                "WHERE schemaname = $1 AND tablename <> 'schema_migrations'",
                schema,
            )
            async with con.transaction():
                await con.execute("SET LOCAL session_replication_role = replica")
                names = ", ".join(row[0] for row in tables)
                await con.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        finally:
            await con.close()

    async def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    def stop(self) -> None:
        if self.local is not None:
            self.local.destroy()


@dataclass
class RunningService:
    """A service served in-process on 127.0.0.1 with an ephemeral port."""

    name: str
    server: GrpcServer
    settings: Any
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    secrets: DevSecrets | None = None

    @property
    def address(self) -> str:
        """The service port: TLS for people (plaintext with PHISEAL_INSECURE=true)."""
        return f"127.0.0.1:{self.server.port}"

    @property
    def peer_address(self) -> str:
        """The peer port (mutual TLS): what other services' ``*_ADDR`` point at."""
        return f"127.0.0.1:{self.server.peer_port}"

    @property
    def health_address(self) -> str:
        """The plaintext, health-only port."""
        return f"127.0.0.1:{self.server.health_port}"

    @property
    def tls(self) -> bool:
        return self.server.tls

    def _keep(self, channel: grpc.aio.Channel) -> grpc.aio.Channel:
        self.channels.append(channel)
        return channel

    def channel(self, token: str | None = _ADMIN) -> grpc.aio.Channel:
        """A person's channel to the service port: TLS, carrying ``token`` on every call that
        brings no ``authorization`` of its own. By default the development admin ("*");
        ``token=None`` sends no credentials. Plaintext when the service runs insecure."""
        if not self.tls:
            return self.plaintext_channel()
        return self._keep(person_channel(self.address, token))

    def peer_channel(self, identity: str) -> grpc.aio.Channel:
        """Mutual TLS to the peer port presenting ``identity``'s certificate from our CA."""
        if not self.tls:
            return self.plaintext_channel(self.peer_address)
        return self._keep(peer_channel(self.peer_address, identity, service=self.name))

    def plaintext_channel(self, address: str | None = None) -> grpc.aio.Channel:
        """No TLS at all (to the service port unless told otherwise)."""
        return self._keep(grpc.aio.insecure_channel(address or self.address))

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close(None)
        await self.server.stop()


def service_env(
    name: str, database_url: str | None, overrides: Mapping[str, str]
) -> dict[str, str]:
    """The environment a service is built from in tests: ports 0 (health and metrics too, even
    when a test fixes the service port), short intervals, the
    session's development secrets (TLS, mTLS peers, tokens), its own runtime database role
    (``database_url`` names a superuser, as tests tampering with the database need), and for
    auditsvc a fresh folder for its signing key, trusted keys and journal."""
    env = {
        f"{name.upper()}_PORT": "0",
        f"{name.upper()}_PEER_PORT": "0",
        f"{name.upper()}_HEALTH_PORT": "0",
        # Ephemeral too: by default /metrics sits at the service port + 300, which for a test's
        # free_port() service port is a port nobody checked (another process held it once).
        f"{name.upper()}_METRICS_PORT": "0",
        "PHISEAL_TLS_DIR": str(session_secrets().folder),
        "SHUTDOWN_GRACE_SECONDS": "2",
        "DB_CHECK_INTERVAL_SECONDS": "0.2",
        "DB_CONNECT_TIMEOUT_SECONDS": "10",
    }
    if database_url:
        env["DATABASE_URL"] = dbroles.runtime_url(database_url, name)
    if name == "auditsvc":
        folder = Path(tempfile.mkdtemp(prefix="phiseal-test-auditsvc-"))
        atexit.register(shutil.rmtree, folder, True)
        env.update(
            AUDITSVC_SIGNING_KEY_GENERATE="true",
            AUDITSVC_SIGNING_KEY_FILE=str(folder / "signing-key.pem"),
            AUDITSVC_TRUSTED_KEYS_FILE=str(folder / "trusted-keys.json"),
            AUDITSVC_JOURNAL_FILE=str(folder / "checkpoints.jsonl"),
        )
    env.update(overrides)
    return env


async def start_service(
    name: str, database_url: str | None, overrides: Mapping[str, str] | None = None
) -> RunningService:
    """Builds ``services.<name>`` from an explicit environment and starts it."""
    config = importlib.import_module(f"services.{name}.config")
    app = importlib.import_module(f"services.{name}.app")
    settings = config.Settings.from_env(service_env(name, database_url, overrides or {}))
    server: GrpcServer = await app.build(settings)
    await server.start()
    return RunningService(name=name, server=server, settings=settings, secrets=session_secrets())
