"""A tiny service for exercising the shared plumbing without any domain code."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from services.common import errors
from services.common.security.auth import Caller, DevelopmentAuthenticator, Role, current_caller
from services.common.security.authz import Rule, require
from services.common.server.config import ServerSettings
from services.common.server.grpc_server import GrpcServer, ServerParts

SERVICE = "phiseal.test.Fake"
# grpc_health ships no type information.
Req: Any = health_pb2.HealthCheckRequest
Resp: Any = health_pb2.HealthCheckResponse

SECRET_IN_EXCEPTION = "diagnosis=E11.9 for jane.doe@example.com"


async def echo(request: Any, context: Any) -> Any:
    """Answers the request id and the actor in the response's service-less fields."""
    await asyncio.sleep(0)
    caller = current_caller()
    assert caller.request_id
    assert caller.principal.subject
    return Resp(status=Resp.SERVING)


async def raise_domain(request: Any, context: Any) -> Any:
    kind = getattr(errors, request.service)
    raise kind(f"{request.service} happened: fix it like this")


async def crash(request: Any, context: Any) -> Any:
    raise RuntimeError(SECRET_IN_EXCEPTION)


async def edit_workspace(request: Any, context: Any) -> Any:
    """Stands for a workspace action: the domain learns the workspace, then calls require()."""
    require(current_caller().principal, request.service, Role.EDITOR)
    return Resp(status=Resp.SERVING)


# Set when a Slow call is being served: tests wait on it instead of guessing with a sleep.
SLOW_STARTED = asyncio.Event()


async def slow(request: Any, context: Any) -> Any:
    SLOW_STARTED.set()
    await asyncio.sleep(float(request.service or "0.5"))
    return Resp(status=Resp.SERVING)


def _handler(fn: Any) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=Req.FromString, response_serializer=Resp.SerializeToString
    )


def register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": _handler(echo),
                    "Raise": _handler(raise_domain),
                    "Crash": _handler(crash),
                    "Slow": _handler(slow),
                    "EditWorkspace": _handler(edit_workspace),
                    "ServiceOnly": _handler(echo),
                },
            ),
        )
    )


# The fake service's authorization rules, shaped like each service's rules.py.
RULES = {
    f"/{SERVICE}/Echo": Rule(Role.VIEWER, services=frozenset({"encryptsvc"})),
    f"/{SERVICE}/EditWorkspace": Rule(Role.EDITOR, phi=True),
    f"/{SERVICE}/ServiceOnly": Rule(None, services=frozenset({"keysvc"}), phi=True),
}


class RecordingAuditor:
    """A DenialAuditor that remembers what it was asked to audit."""

    def __init__(self) -> None:
        self.denials: list[tuple[str, str, str]] = []

    async def record_denial(
        self, caller: Caller, method: str, workspace_id: str, reason: str
    ) -> None:
        self.denials.append((caller.actor_id, method.rsplit("/", 1)[-1], workspace_id))


def build_from_settings(settings: ServerSettings, auditor: Any = None) -> GrpcServer:
    """The fake service as a real service would be wired: security from the settings."""
    parts = ServerParts(
        name="fake",
        service_names=[SERVICE],
        register=register,
        rules=RULES,
        denial_auditor=auditor,
    )
    return GrpcServer.from_settings(parts, settings, check_interval=0.1)


def build(grace: float = 2.0, checks: Any = ()) -> GrpcServer:
    parts = ServerParts(
        name="fake",
        service_names=[SERVICE],
        register=register,
        authenticator=DevelopmentAuthenticator(),
        checks=checks,
    )
    return GrpcServer(parts, host="127.0.0.1", port=0, grace=grace, check_interval=0.1)


def call(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=Req.SerializeToString,
        response_deserializer=Resp.FromString,
    )
