"""auditsvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import grpc
import structlog
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from prometheus_client import Counter

from services.auditsvc import signing
from services.auditsvc.audit_log import AuditCounts, AuditLog
from services.auditsvc.config import Settings
from services.auditsvc.rules import RULES
from services.auditsvc.servicer import AuditServicer
from services.auditsvc.store import MIGRATIONS, SCHEMA, AuditStore, open_pool
from services.common.data.db import connect_with_retry, migrate
from services.common.server.grpc_server import GrpcServer, ServerParts
from services.common.server.health import HealthCheck, database_check
from services.common.server.metrics import Metrics

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name

log = structlog.get_logger("auditsvc")


def durability_check(store: AuditStore) -> HealthCheck:
    """NOT_SERVING while PostgreSQL could lose an acknowledged commit."""

    async def check() -> str | None:
        try:
            fsync, synchronous_commit = await store.durability()
        except Exception as exc:  # database_check reports the outage itself
            return f"cannot read durability settings ({type(exc).__name__})"
        if fsync != "on":
            return "PostgreSQL runs with fsync off: acknowledged audit records could be lost"
        if synchronous_commit == "off":
            return (
                "PostgreSQL runs with synchronous_commit off: acknowledged audit records "
                "could be lost"
            )
        return None

    return check


class Periodic:
    """Runs ``job`` every ``interval`` seconds until stopped; a failure is logged, not fatal."""

    def __init__(self, name: str, interval: float, job: Callable[[], Awaitable[object]]) -> None:
        self._name = name
        self._interval = interval
        self._job = job
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._job()
            except Exception as exc:
                log.error("periodic_job_failed", job=self._name, error_type=type(exc).__name__)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def audit_counts(metrics: Metrics) -> AuditCounts:
    def counter(name: str, documentation: str) -> Counter:
        return metrics.counter(f"phiseal_audit_{name}", documentation)

    return AuditCounts(
        records=counter("records", "Audit records appended through RecordEvents"),
        duplicates=counter("duplicates", "Resent audit events already in the log"),
        checkpoints=counter("checkpoints", "Chain heads signed as checkpoints"),
        alarms=counter("alarms", "Verifications that found a chain broken, edited or cut"),
    )


class AuditServer(GrpcServer):
    """The server, holding its AuditLog so tests and tools can checkpoint on demand."""

    audit_log: AuditLog


async def build(settings: Settings) -> AuditServer:
    """Wires auditsvc; the returned server is not started yet."""
    key = signing.load_or_create(settings.signing_key_file)
    url = settings.server.require_database()
    con = await connect_with_retry(url, settings.server.db_connect_timeout)
    try:
        await migrate(con, SCHEMA, MIGRATIONS)
    finally:
        await con.close()
    pool = await open_pool(
        url, min_size=settings.server.db_pool_min, max_size=settings.server.db_pool_max
    )
    store = AuditStore(pool)
    metrics = Metrics("auditsvc")
    metrics.watch_pool(pool)
    audit_log = AuditLog(store, key, counts=audit_counts(metrics))
    await store.register_key(audit_log.key_id, audit_log.public_key_pem)
    await store.ensure_partitions(settings.partitions_ahead)
    servicer = AuditServicer(audit_log)
    checkpoints = Periodic("audit-checkpoints", settings.checkpoint_interval, audit_log.checkpoint)
    partitions = Periodic(
        "audit-partitions",
        settings.partition_interval,
        lambda: store.ensure_partitions(settings.partitions_ahead),
    )

    def register(server: grpc.aio.Server) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)

    parts = ServerParts(
        name="auditsvc",
        service_names=[SERVICE_NAME],
        register=register,
        rules=RULES,
        metrics=metrics,
        # auditsvc appends its own denials to the log it keeps (no outbox, no relay).
        denial_auditor=audit_log,
        checks=[database_check(pool), durability_check(store)],
        starters=[checkpoints.start, partitions.start],
        closers=[checkpoints.stop, partitions.stop, pool.close],
    )
    server = AuditServer.from_settings(parts, settings.server)
    server.audit_log = audit_log
    return server
