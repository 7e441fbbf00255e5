"""Channels to the four services' person-facing ports, and calls made with the person's token.

The console is only a client: every call carries the signed-in person's bearer token, so each
service authorizes and audits that person exactly as it would for grpcurl.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phiseal.audit.v1 import audit_pb2_grpc
from phiseal.keys.v1 import keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2_grpc

from services.common.security.authn import AUTHORIZATION_HEADER
from services.console.config import Settings

SERVICE_NAMES = ("policysvc", "keysvc", "encryptsvc", "auditsvc")


@dataclass(frozen=True)
class Channels:
    """One TLS channel per service, shared by every request (connections, not state)."""

    by_name: dict[str, grpc.aio.Channel]

    @classmethod
    def open(cls, settings: Settings) -> Channels:
        credentials = grpc.ssl_channel_credentials(root_certificates=settings.ca_cert.read_bytes())
        addresses = {
            "policysvc": settings.policysvc_addr,
            "keysvc": settings.keysvc_addr,
            "encryptsvc": settings.encryptsvc_addr,
            "auditsvc": settings.auditsvc_addr,
        }
        return cls({name: grpc.aio.secure_channel(a, credentials) for name, a in addresses.items()})

    async def close(self) -> None:
        for channel in self.by_name.values():
            await channel.close(None)

    async def health(self, within: float) -> dict[str, str]:
        """Each service's grpc.health.v1 status, or "UNREACHABLE"."""
        found: dict[str, str] = {}
        for name, channel in self.by_name.items():
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=within)
                found[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError:
                found[name] = "UNREACHABLE"
        return found


@dataclass(frozen=True)
class Calls:
    """The stubs, and the metadata that makes each call the person's own."""

    policy: policy_pb2_grpc.PolicyServiceStub
    keys: keys_pb2_grpc.KeyServiceStub
    audit: audit_pb2_grpc.AuditServiceStub
    metadata: tuple[tuple[str, str], ...]
    timeout: float

    @classmethod
    def for_person(cls, channels: Channels, token: str, request_id: str, timeout: float) -> Calls:
        return cls(
            policy=policy_pb2_grpc.PolicyServiceStub(channels.by_name["policysvc"]),
            keys=keys_pb2_grpc.KeyServiceStub(channels.by_name["keysvc"]),
            audit=audit_pb2_grpc.AuditServiceStub(channels.by_name["auditsvc"]),
            metadata=((AUTHORIZATION_HEADER, f"Bearer {token}"), ("x-request-id", request_id)),
            timeout=timeout,
        )
