"""keysvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

import grpc
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from services.common.app import open_database
from services.common.auth import DevelopmentAuthenticator
from services.common.health import database_check
from services.common.outbox_relay import OutboxRelay
from services.common.server import GrpcServer, ServerParts
from services.keysvc.config import Settings
from services.keysvc.servicer import KeyServicer
from services.keysvc.store import MIGRATIONS, SCHEMA

SERVICE_NAME = keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name


async def build(settings: Settings) -> GrpcServer:
    """Wires keysvc; the returned server is not started yet."""
    pool = await open_database(settings.server, SCHEMA, MIGRATIONS)
    relay = OutboxRelay(pool, settings.server, SCHEMA, settings.auditsvc_addr, settings.outbox)
    checks = [database_check(pool), relay.health_check]
    closers = [relay.stop, pool.close]
    servicer = KeyServicer()

    def register(server: grpc.aio.Server) -> None:
        keys_pb2_grpc.add_KeyServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name="keysvc",
        service_names=[SERVICE_NAME],
        register=register,
        authenticator=DevelopmentAuthenticator(),
        checks=checks,
        starters=[relay.start],
        closers=closers,
    )
    return GrpcServer(
        parts,
        host=settings.server.host,
        port=settings.server.port,
        grace=settings.server.grace_seconds,
        check_interval=settings.server.db_check_interval,
    )
