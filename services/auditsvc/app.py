"""auditsvc composition root: settings → pool → store → domain → servicer → server."""

from __future__ import annotations

import grpc
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from prometheus_client import Counter

from services.auditsvc import signing
from services.auditsvc.audit_log import AuditCounts, AuditLog, utc_now
from services.auditsvc.config import Settings
from services.auditsvc.journal import Journal
from services.auditsvc.rules import RULES
from services.auditsvc.servicer import AuditServicer
from services.auditsvc.store import MIGRATIONS, RUNTIME_ROLE, SCHEMA, AuditStore
from services.common.data.db import open_database
from services.common.server.grpc_server import GrpcServer, ServerParts
from services.common.server.health import HealthCheck, database_check
from services.common.server.lifecycle import Closing, Periodic
from services.common.server.metrics import Metrics

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


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


def audit_counts(metrics: Metrics) -> AuditCounts:
    def counter(name: str, documentation: str) -> Counter:
        return metrics.counter(f"phiseal_audit_{name}", documentation)

    return AuditCounts(
        records=counter("records", "Audit records appended through RecordEvents"),
        duplicates=counter("duplicates", "Resent audit events already in the log"),
    )


class AuditServer(GrpcServer):
    """The server, holding its AuditLog so tests and tools can checkpoint on demand."""

    audit_log: AuditLog


async def build(settings: Settings) -> AuditServer:
    """Wires auditsvc; the returned server is not started yet."""
    generate = settings.generate_signing_key
    key = signing.load_signing_key(settings.signing_key_file, generate=generate)
    trusted = signing.load_trust(settings.trusted_keys_file, key, utc_now(), generate=generate)
    pool = await open_database(settings.server, SCHEMA, MIGRATIONS, role=RUNTIME_ROLE)
    store = AuditStore(pool)
    metrics = Metrics("auditsvc")
    metrics.watch_pool(pool)
    audit_log = AuditLog(
        store, key, trusted, Journal(settings.journal_file), counts=audit_counts(metrics)
    )
    await audit_log.checkpoints.load_journal()
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
        alarms=[audit_log.checkpoints.health_detail],
        components=[Closing("pool", pool.close), checkpoints, partitions],
    )
    server = AuditServer.from_settings(parts, settings.server)
    server.audit_log = audit_log
    return server
