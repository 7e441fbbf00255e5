"""Helpers for tests that touch auditsvc: events, stubs, the whole log, SQL as a superuser."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from phiseal.common.v1 import common_pb2

from phiseal_dev.testing import RunningService, person

PERSON_MD = person("auditor@example.com")
BASE_TIME = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def event(
    workspace_id: str = "ws_1",
    *,
    n: int = 0,
    event_type: str = "Destination Encryption Enabled",
    actor: str = "alice@example.com",
    end_user: str = "",
    details: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> audit_pb2.AuditEvent:
    """An event n minutes after BASE_TIME."""
    d = struct_pb2.Struct()
    d.update(details if details is not None else {"fields": ["traits.email"], "version": n})
    return audit_pb2.AuditEvent(
        event_id=event_id or str(uuid.uuid4()),
        workspace_id=workspace_id,
        actor_user_id=actor,
        event_type=event_type,
        end_user_id=end_user,
        timestamp=ts(BASE_TIME + timedelta(minutes=n)),
        outcome=audit_pb2.OUTCOME_SUCCEEDED,
        target=f"destination/dst_{n}",
        request_id=f"req-{n}",
        service="policysvc",
        details=d,
    )


def stub(channel: grpc.aio.Channel) -> audit_pb2_grpc.AuditServiceStub:
    return audit_pb2_grpc.AuditServiceStub(channel)


class AuditClient(audit_pb2_grpc.AuditServiceStub):
    """A person's stub (the development admin) that also holds ``writer``: the same auditsvc
    reached as policysvc over mutual TLS, since only keysvc and policysvc may record."""

    def __init__(self, service: RunningService) -> None:
        super().__init__(service.channel())
        self.writer = audit_pb2_grpc.AuditServiceStub(service.peer_channel("policysvc"))


async def record(
    audit: audit_pb2_grpc.AuditServiceStub, events: list[audit_pb2.AuditEvent]
) -> audit_pb2.RecordEventsResponse:
    writer = audit.writer if isinstance(audit, AuditClient) else audit
    return await writer.RecordEvents(audit_pb2.RecordEventsRequest(events=events))


async def tamper(database_url: str, *statements: str) -> None:
    """Runs ``statements`` as a superuser with the append-only triggers switched off."""
    con = await asyncpg.connect(database_url, server_settings={"search_path": "auditsvc"})
    try:
        async with con.transaction():
            await con.execute("SET LOCAL session_replication_role = replica")
            for sql in statements:
                await con.execute(sql)
    finally:
        await con.close()


async def whole_log(
    audit: audit_pb2_grpc.AuditServiceStub,
    flt: audit_pb2.AuditFilter,
    access_reason: str,
    metadata: Any,
) -> list[audit_pb2.AuditRecord]:
    """Every record ``flt`` selects, following next_page_token to the last page."""
    records: list[audit_pb2.AuditRecord] = []
    token = ""
    while True:
        reply = await audit.QueryEvents(
            audit_pb2.QueryEventsRequest(
                filter=flt,
                page=common_pb2.PageRequest(page_size=500, page_token=token),
                access_reason=access_reason,
            ),
            metadata=metadata,
        )
        records += reply.records
        token = reply.next_page_token
        if not token:
            return records
