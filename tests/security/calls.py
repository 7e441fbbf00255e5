"""Calling any RPC generically and reading its status: unary, or a stream's first message."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phiseal_dev.testing import RunningService, bearer
from tests.security.world import Rpc

OK = grpc.StatusCode.OK


async def call(
    channel: grpc.aio.Channel,
    rpc: Rpc,
    request: Message | bytes,
    token: str | None = None,
    metadata: Any = None,
) -> tuple[grpc.StatusCode, str]:
    """The call's status code and details; a stream is judged by its first message (or end)."""
    serialize = (lambda b: b) if isinstance(request, bytes) else rpc.request.SerializeToString
    md = metadata if metadata is not None else (bearer(token) if token is not None else None)
    try:
        if rpc.streaming:
            stream = channel.unary_stream(
                rpc.method,
                request_serializer=serialize,
                response_deserializer=rpc.response.FromString,
            )(request, metadata=md, timeout=30)
            try:
                async for _ in stream:
                    break
            finally:
                stream.cancel()
        else:
            await channel.unary_unary(
                rpc.method,
                request_serializer=serialize,
                response_deserializer=rpc.response.FromString,
            )(request, metadata=md, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


async def serving(service: RunningService) -> bool:
    """Whether the health-only port answers SERVING."""
    channel = service.plaintext_channel(service.health_address)
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
