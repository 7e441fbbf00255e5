"""policysvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

import grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from services.common.app import open_database
from services.common.auth import DevelopmentAuthenticator
from services.common.health import database_check
from services.common.server import GrpcServer, ServerParts
from services.policysvc.catalog import Catalog
from services.policysvc.config import Settings
from services.policysvc.servicer import PolicyServicer
from services.policysvc.store import MIGRATIONS, SCHEMA, CatalogStore

SERVICE_NAME = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name


async def build(settings: Settings) -> GrpcServer:
    """Wires policysvc; the returned server is not started yet."""
    pool = await open_database(settings.server, SCHEMA, MIGRATIONS)
    checks = [database_check(pool)]
    closers = [pool.close]
    servicer = PolicyServicer(Catalog(CatalogStore(pool)))

    def register(server: grpc.aio.Server) -> None:
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name="policysvc",
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
