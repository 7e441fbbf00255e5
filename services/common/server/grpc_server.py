"""serve(): a grpc.aio server with health, reflection, the interceptor and ordered shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Self

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.common.security.auth import Authenticator, DevelopmentAuthenticator
from services.common.security.authn import CredentialAuthenticator
from services.common.security.authz import Access, DenialAuditor, Rule
from services.common.security.tls import TlsFiles, mtls_server_credentials, server_credentials
from services.common.security.tokens import TokenVerifier
from services.common.server.config import ConfigError, ServerSettings
from services.common.server.health import HealthCheck, HealthMonitor
from services.common.server.interceptor import ServerInterceptor
from services.common.server.lifecycle import Component, Components
from services.common.server.metrics import Metrics, MetricsEndpoint

log = structlog.get_logger("server")

# The health service name that reports only that the process answers (its event loop runs).
LIVENESS = "liveness"

# Explicit so that a hostile client meets a clear RESOURCE_EXHAUSTED, not a silent default.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class ServerParts:
    """What a service's composition root hands to ``GrpcServer``."""

    name: str  # short name, e.g. "keysvc"
    service_names: Sequence[str]  # full names, e.g. "phiseal.keys.v1.KeyService"
    register: Callable[[grpc.aio.Server], None]
    # None with GrpcServer.from_settings, which picks it from the security settings.
    authenticator: Authenticator | None = None
    checks: Sequence[HealthCheck] = ()
    # Health details that raise an alarm without stopping the service (health.ALARMS).
    alarms: Sequence[HealthCheck] = ()
    # In dependency order (the pool first, then peer channels, then what uses them): started
    # in this order once the ports are bound, stopped in reverse once the server has stopped.
    components: Sequence[Component] = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # Where denied PHI-related attempts are audited (services.common.security.authz).
    denial_auditor: DenialAuditor | None = None
    # The service's authorization rules (services/<name>/rules.py), one per RPC. None: no
    # per-method gate (tests with the development authenticator); from_settings refuses None.
    rules: Mapping[str, Rule] | None = None
    # The service's registry (its composition root hands meters from it to what it builds);
    # None: a fresh one holding only the RPC metrics.
    metrics: Metrics | None = None


class GrpcServer:
    """One running service: start() binds and serves, stop() shuts down in a fixed order."""

    def __init__(
        self,
        parts: ServerParts,
        *,
        host: str,
        port: int,
        grace: float,
        check_interval: float,
        credentials: grpc.ServerCredentials | None = None,
        peer_port: int | None = None,
        peer_credentials: grpc.ServerCredentials | None = None,
        health_port: int | None = None,
        metrics_port: int | None = None,
        authenticator: Authenticator | None = None,
        access: Access | None = None,
    ) -> None:
        self.parts = parts
        self._host = host
        self._port = port
        self._grace = grace
        self._credentials = credentials
        self._peer_port = peer_port
        self._peer_credentials = peer_credentials
        self._health_port = health_port
        authenticator = authenticator or parts.authenticator
        if authenticator is None:
            raise ValueError("no authenticator: use GrpcServer.from_settings or pass one")
        if access is None and parts.rules is not None:
            access = Access(rules=parts.rules, auditor=parts.denial_auditor)
        self.metrics = parts.metrics or Metrics(parts.name)
        # Plaintext HTTP /metrics for Prometheus; None: not served (tests building by hand).
        self.metrics_endpoint: MetricsEndpoint | None = None
        if metrics_port is not None:
            self.metrics_endpoint = MetricsEndpoint(self.metrics, host, metrics_port)
        self.health = HealthServicer()
        self.monitor = HealthMonitor(
            self.health, parts.service_names, parts.checks, check_interval, parts.alarms
        )
        self.server = grpc.aio.server(
            interceptors=[ServerInterceptor(authenticator, access, self.metrics.rpc)],
            options=[
                ("grpc.max_receive_message_length", parts.max_message_bytes),
                ("grpc.max_send_message_length", parts.max_message_bytes),
                ("grpc.so_reuseport", 0),
                # Peers send keepalive pings every 10 s (server.clients); allow them.
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        # Orchestrators probe health here without certificates; nothing else is served on it.
        self.health_server: grpc.aio.Server | None = None
        if health_port is not None:
            self.health_server = grpc.aio.server(
                options=[("grpc.max_receive_message_length", 4096), ("grpc.so_reuseport", 0)]
            )
        self.port = 0
        self.peer_port = 0
        self.health_port = 0
        # The metrics endpoint first: it shows start-up and stays until the pool has closed.
        endpoint: list[Component] = [self.metrics_endpoint] if self.metrics_endpoint else []
        self.components = Components(
            [*endpoint, *parts.components], name=f"{parts.name} components"
        )
        self._stopped = asyncio.Event()
        self._stop_lock = asyncio.Lock()

    @property
    def metrics_port(self) -> int:
        """The bound /metrics port (0 while not serving or without one)."""
        return self.metrics_endpoint.port if self.metrics_endpoint is not None else 0

    @property
    def tls(self) -> bool:
        """Whether the service port serves TLS (false only in PHISEAL_INSECURE mode)."""
        return self._credentials is not None

    @classmethod
    def from_settings(
        cls, parts: ServerParts, settings: ServerSettings, *, check_interval: float | None = None
    ) -> Self:
        """The server as the settings ask: TLS + tokens, mTLS peer port, health-only port.

        PHISEAL_INSECURE=true serves both ports in plaintext with the development
        authenticator (every caller a superuser): a developer's loopback only.
        """
        security = settings.security
        if parts.rules is None:
            raise ValueError(f"{parts.name}: ServerParts.rules is required (its rules.py)")
        access = Access(rules=parts.rules, auditor=parts.denial_auditor)
        parts = replace(parts, max_message_bytes=settings.max_message_bytes)
        interval = settings.db_check_interval if check_interval is None else check_interval

        common = {
            "host": settings.host,
            "port": settings.port,
            "grace": settings.grace_seconds,
            "check_interval": interval,
            "peer_port": settings.peer_port,
            "health_port": settings.health_port,
            "metrics_port": settings.metrics_port,
            "access": access,
        }
        if security.insecure:
            log.warning("insecure_transport", service=settings.service, setting="PHISEAL_INSECURE")
            return cls(parts, authenticator=DevelopmentAuthenticator(), **common)  # type: ignore[arg-type]
        files = TlsFiles.in_dir(security.secrets_dir, settings.service)
        try:
            verifier = TokenVerifier.from_file(
                security.token_public_key_path,
                issuer=security.token_issuer,
                audience=security.token_audience,
                leeway_seconds=security.clock_skew_seconds,
                allow_wildcard=security.allow_wildcard_tokens,
            )
            credentials = server_credentials(files)
            peer_credentials = mtls_server_credentials(files)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            parts,
            authenticator=CredentialAuthenticator(verifier, access),
            credentials=credentials,
            peer_credentials=peer_credentials,
            **common,  # type: ignore[arg-type]
        )

    async def start(self) -> int:
        """Binds, serves, and returns the bound port (useful with port 0)."""
        self.parts.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *self.parts.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        address = f"{self._host}:{self._port}"
        if self._credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, self._credentials)
        if self._peer_port is not None:
            peer_address = f"{self._host}:{self._peer_port}"
            if self._peer_credentials is None:
                self.peer_port = self.server.add_insecure_port(peer_address)
            else:
                self.peer_port = self.server.add_secure_port(peer_address, self._peer_credentials)
        if self.health_server is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            # Reflection naming Health alone, so `grpcurl -plaintext host:port
            # grpc.health.v1.Health/Check` works as printed (descriptors are not secrets).
            reflection.enable_server_reflection(
                [
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ],
                self.health_server,
            )
            self.health_port = self.health_server.add_insecure_port(
                f"{self._host}:{self._health_port}"
            )
            await self.health_server.start()
        await self.server.start()
        # Serving only once the first check passed; until then callers see NOT_SERVING.
        await self.monitor.start()
        # Liveness (Kubernetes livenessProbe service "liveness"): SERVING while the event loop
        # answers, whatever the dependencies; a database outage must not restart every pod.
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        try:
            await self.components.start()
        except BaseException:
            # Components unwound what they had started; release the ports too, so a failed
            # start-up leaves nothing running behind the error.
            await self.stop()
            raise
        log.info(
            "server_started",
            service=self.parts.name,
            address=f"{self._host}:{self.port}",
            tls=self._credentials is not None,
            peer_port=self.peer_port or None,
            health_port=self.health_port or None,
            metrics_port=self.metrics_port or None,
        )
        return self.port

    async def stop(self) -> None:
        """health NOT_SERVING → server.stop(grace) → components in reverse (the pool last)."""
        async with self._stop_lock:
            if self._stopped.is_set():
                return
            log.info("server_stopping", service=self.parts.name, grace=self._grace)
            await self.monitor.stop()
            await self.server.stop(self._grace)
            if self.health_server is not None:
                await self.health_server.stop(0)
            await self.components.stop()
            self._stopped.set()
            log.info("server_stopped", service=self.parts.name)


async def run_until_signal(server: GrpcServer) -> None:
    """Serves until SIGTERM or SIGINT, then stops in order."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    await server.stop()
