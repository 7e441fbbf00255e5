"""policysvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

import grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from services.common.data.changefeed import ChangeFeed
from services.common.data.db import open_database
from services.common.data.outbox_relay import OutboxRelay
from services.common.offload import Offload
from services.common.security.denials import OutboxDenialAuditor
from services.common.server.grpc_server import GrpcServer, ServerParts
from services.common.server.health import database_check
from services.common.server.lifecycle import Closing
from services.common.server.metrics import Metrics
from services.policysvc.catalog import Catalog
from services.policysvc.config import Settings
from services.policysvc.picker import FieldPicker
from services.policysvc.policy import Policies
from services.policysvc.privacy import Privacy
from services.policysvc.rules import RULES
from services.policysvc.servicer import PolicyServicer
from services.policysvc.store import (
    CHANGES_CHANNEL,
    MIGRATIONS,
    SCHEMA,
    CatalogStore,
    PolicyStore,
    PrivacyStore,
)

SERVICE_NAME = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name


async def build(settings: Settings) -> GrpcServer:
    """Wires policysvc; the returned server is not started yet."""
    pool = await open_database(settings.server, SCHEMA, MIGRATIONS)
    metrics = Metrics("policysvc")
    metrics.watch_pool(pool)
    relay = OutboxRelay(
        pool, settings.server, SCHEMA, settings.auditsvc_addr, settings.outbox, metrics
    )
    checks = [database_check(pool), relay.health_check]
    feed = ChangeFeed(
        settings.server.require_database(),
        CHANGES_CHANNEL,
        heartbeat_interval=settings.watch_heartbeat_seconds,
        application_name="policysvc-changefeed",
    )
    # Large samples and long path lists are analysed in a worker process (started on first
    # use), so the loop keeps answering GetPolicy, health checks and watch streams meanwhile.
    offload = Offload("policysvc")
    privacy = Privacy(PrivacyStore(pool), offload)
    policy_store = PolicyStore(pool, CHANGES_CHANNEL)
    servicer = PolicyServicer(
        Catalog(CatalogStore(pool)),
        privacy,
        Policies(policy_store, offload),
        FieldPicker(policy_store, privacy),
        feed,
    )

    def register(server: grpc.aio.Server) -> None:
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name="policysvc",
        service_names=[SERVICE_NAME],
        register=register,
        rules=RULES,
        metrics=metrics,
        denial_auditor=OutboxDenialAuditor(pool, "policysvc"),
        checks=checks,
        alarms=[relay.quarantine_alarm],
        components=[Closing("pool", pool.close), Closing("offload", offload.close), feed, relay],
    )
    return GrpcServer.from_settings(parts, settings.server)
