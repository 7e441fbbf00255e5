"""auditsvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

import grpc
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from services.auditsvc.config import Settings
from services.auditsvc.servicer import AuditServicer
from services.auditsvc.store import MIGRATIONS, SCHEMA
from services.common.app import open_database
from services.common.auth import DevelopmentAuthenticator
from services.common.health import database_check
from services.common.server import GrpcServer, ServerParts

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


async def build(settings: Settings) -> GrpcServer:
    """Wires auditsvc; the returned server is not started yet."""
    pool = await open_database(settings.server, SCHEMA, MIGRATIONS)
    checks = [database_check(pool)]
    closers = [pool.close]
    servicer = AuditServicer()

    def register(server: grpc.aio.Server) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name="auditsvc",
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
