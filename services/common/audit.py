"""Audit entries as the domain writes them, and their append to the service's outbox."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from services.common.auth import current_principal, current_request_id


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"


JSONValue = str | int | float | bool | None | list[Any] | dict[str, Any]


@dataclass(frozen=True)
class AuditEntry:
    """One audited action. ``details`` names fields and versions; never a value or secret."""

    event_type: str  # Title Case, past tense: "Destination Encryption Enabled"
    workspace_id: str
    target: str
    end_user_id: str = ""
    outcome: Outcome = Outcome.SUCCEEDED
    details: Mapping[str, JSONValue] = field(default_factory=dict)
    access_reason: str = ""
    actor_user_id: str = field(default_factory=lambda: current_principal().actor_id)
    request_id: str = field(default_factory=current_request_id)
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self, service: str) -> dict[str, JSONValue]:
        """The wire form, field names as in phiseal.audit.v1.AuditEvent."""
        return {
            "event_id": self.event_id,
            "workspace_id": self.workspace_id,
            "actor_user_id": self.actor_user_id,
            "event_type": self.event_type,
            "end_user_id": self.end_user_id,
            "timestamp": self.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "outcome": self.outcome.value,
            "target": self.target,
            "request_id": self.request_id,
            "service": service,
            "access_reason": self.access_reason,
            "details": dict(self.details),
        }


# The NOTIFY is delivered at commit (never for a rolled-back change) and wakes the outbox relay
# (services.common.outbox_relay) at once; the channel is per schema, so keysvc and policysvc
# sharing a database do not wake each other.
_INSERT_OUTBOX = """
WITH inserted AS (
    INSERT INTO audit_outbox (event_id, event) VALUES ($1, $2::jsonb) RETURNING seq
)
SELECT pg_notify(current_schema() || '_audit_outbox', '') FROM inserted
"""


async def append_to_outbox(
    con: asyncpg.Connection | PoolConnectionProxy, entry: AuditEntry, service: str
) -> None:
    """Writes ``entry`` in the caller's transaction: it commits, or fails, with the change."""
    await con.execute(
        _INSERT_OUTBOX, uuid.UUID(entry.event_id), orjson.dumps(entry.to_json(service)).decode()
    )
