"""Peer channels carry the calling service's identity."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from services.common.security.auth import DevelopmentAuthenticator, current_caller
from services.common.server.clients import open_channel
from services.common.server.grpc_server import GrpcServer, ServerParts

Resp: Any = health_pb2.HealthCheckResponse
Req: Any = health_pb2.HealthCheckRequest


async def who(request: Any, context: Any) -> Any:
    """Answers "kind:subject" of the caller in the service field of a request echo."""
    principal = current_caller().principal
    return Req(service=f"{principal.kind}:{principal.subject}")


def register(server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        who, request_deserializer=Req.FromString, response_serializer=Req.SerializeToString
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("phiseal.test.Who", {"Who": handler}),)
    )


async def test_open_channel_identifies_the_calling_service() -> None:
    """A call through open_channel(caller="keysvc") is served as service keysvc."""
    parts = ServerParts(
        name="who",
        service_names=["phiseal.test.Who"],
        register=register,
        authenticator=DevelopmentAuthenticator(),
    )
    server = GrpcServer(parts, host="127.0.0.1", port=0, grace=1, check_interval=1)
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}", caller="keysvc")
    try:
        call = channel.unary_unary(
            "/phiseal.test.Who/Who",
            request_serializer=Req.SerializeToString,
            response_deserializer=Req.FromString,
        )
        reply = await call(Req())
    finally:
        await channel.close(None)
        await server.stop()
    assert reply.service == "service:keysvc"
