"""encryptsvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

import grpc
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc

from services.common.auth import DevelopmentAuthenticator
from services.common.health import HealthCheck
from services.common.server import Closer, GrpcServer, ServerParts
from services.encryptsvc.config import Settings
from services.encryptsvc.servicer import EncryptServicer

SERVICE_NAME = encrypt_pb2.DESCRIPTOR.services_by_name["EncryptService"].full_name


async def build(settings: Settings) -> GrpcServer:
    """Wires encryptsvc; the returned server is not started yet."""
    checks: list[HealthCheck] = []
    closers: list[Closer] = []
    servicer = EncryptServicer()

    def register(server: grpc.aio.Server) -> None:
        encrypt_pb2_grpc.add_EncryptServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name="encryptsvc",
        service_names=[SERVICE_NAME],
        register=register,
        authenticator=DevelopmentAuthenticator(),
        checks=checks,
        closers=closers,
    )
    return GrpcServer(
        parts,
        host=settings.server.host,
        port=settings.server.port,
        grace=settings.server.grace_seconds,
        check_interval=settings.server.db_check_interval,
    )
