"""keysvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import grpc
import structlog
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from services.common.data.changefeed import ChangeFeed
from services.common.data.db import open_database
from services.common.data.outbox_relay import OutboxRelay
from services.common.security.auth import Caller
from services.common.security.denials import OutboxDenialAuditor
from services.common.server.clients import open_peer_channel
from services.common.server.grpc_server import GrpcServer, ServerParts
from services.common.server.health import database_check
from services.common.server.metrics import Metrics
from services.keysvc.config import Settings
from services.keysvc.directory import PolicyDirectory
from services.keysvc.keys import EXPIRY_SWEEPER, KeyManager
from services.keysvc.rules import RULES
from services.keysvc.servicer import KeyServicer
from services.keysvc.store import CHANGES_CHANNEL, MIGRATIONS, SCHEMA, PgKeyStore

SERVICE_NAME = keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name

log = structlog.get_logger("keysvc")


class ExpirySweeper:
    """Marks overdue pending versions expired every ``interval`` seconds (all replicas may run)."""

    def __init__(self, keys: KeyManager, interval: float) -> None:
        self._keys = keys
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keysvc-expiry-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._keys.expire_due(Caller.system(EXPIRY_SWEEPER))
            except Exception as exc:  # a failed sweep is retried next interval
                log.warning("expiry_sweep_failed", error_type=type(exc).__name__)


async def build(settings: Settings) -> GrpcServer:
    """Wires keysvc; the returned server is not started yet."""
    pool = await open_database(settings.server, SCHEMA, MIGRATIONS)
    metrics = Metrics("keysvc")
    metrics.watch_pool(pool)
    relay = OutboxRelay(
        pool, settings.server, SCHEMA, settings.auditsvc_addr, settings.outbox, metrics
    )
    policysvc = open_peer_channel(settings.policysvc_addr, "keysvc", settings.server.security)
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
    sweeper = ExpirySweeper(keys, settings.expiry_sweep_interval)
    servicer = KeyServicer(keys, feed)

    async def close_policysvc() -> None:
        await policysvc.close(None)

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
        starters=[feed.start, sweeper.start, relay.start],
        closers=[sweeper.stop, feed.stop, relay.stop, close_policysvc, pool.close],
    )
    return GrpcServer.from_settings(parts, settings.server)
