"""keysvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

from datetime import timedelta

import grpc
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from services.common.data.changefeed import ChangeFeed
from services.common.data.db import open_database
from services.common.data.outbox_relay import OutboxRelay
from services.common.security.auth import Caller
from services.common.security.denials import OutboxDenialAuditor
from services.common.server.clients import open_peer_channel
from services.common.server.grpc_server import GrpcServer, ServerParts
from services.common.server.health import database_check
from services.common.server.lifecycle import Closing, Periodic
from services.common.server.metrics import Metrics
from services.keysvc.config import Settings
from services.keysvc.directory import PolicyDirectory
from services.keysvc.keys import EXPIRY_SWEEPER, KeyManager
from services.keysvc.rules import RULES
from services.keysvc.servicer import KeyServicer
from services.keysvc.store import CHANGES_CHANNEL, MIGRATIONS, SCHEMA, PgKeyStore

SERVICE_NAME = keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name


async def build(settings: Settings) -> GrpcServer:
    """Wires keysvc; the returned server is not started yet."""
    pool = await open_database(settings.server, SCHEMA, MIGRATIONS)
    metrics = Metrics("keysvc")
    metrics.watch_pool(pool)
    relay = OutboxRelay(
        pool, settings.server, SCHEMA, settings.auditsvc_addr, settings.outbox, metrics
    )
    policysvc = open_peer_channel(
        settings.policysvc_addr, "keysvc", settings.server.security, peer="policysvc"
    )
    keys = KeyManager(
        PgKeyStore(pool),
        PolicyDirectory(policysvc, timeout=settings.policysvc_timeout),
        pending_ttl=timedelta(seconds=settings.pending_key_ttl),
    )
    feed = ChangeFeed(
        settings.server.require_database(),
        CHANGES_CHANNEL,
        heartbeat_interval=settings.watch_heartbeat_interval,
    )
    # Marks overdue pending versions expired; every replica may run it.
    sweeper = Periodic(
        "keysvc-expiry-sweep",
        settings.expiry_sweep_interval,
        lambda: keys.expire_due(Caller.system(EXPIRY_SWEEPER)),
    )
    servicer = KeyServicer(keys, feed)

    def register(server: grpc.aio.Server) -> None:
        keys_pb2_grpc.add_KeyServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name="keysvc",
        service_names=[SERVICE_NAME],
        register=register,
        rules=RULES,
        metrics=metrics,
        denial_auditor=OutboxDenialAuditor(pool, "keysvc"),
        checks=[database_check(pool), relay.health_check],
        alarms=[relay.quarantine_alarm],
        components=[
            Closing("pool", pool.close),
            Closing("policysvc-channel", lambda: policysvc.close(None)),
            feed,
            sweeper,
            relay,
        ],
    )
    return GrpcServer.from_settings(parts, settings.server)
