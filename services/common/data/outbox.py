"""The audit outbox: an entry is written in the same transaction as the change it records.

The entry is checked against auditsvc's own rules (services.common.audit_rules) first: one
auditsvc would refuse fails the action with INVALID_ARGUMENT instead of entering the outbox.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from services.common.audit import AuditEntry

# The NOTIFY is delivered at commit (never for a rolled-back change) and wakes the outbox relay
# (services.common.data.outbox_relay) at once; the channel is per schema, so keysvc and policysvc
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
    entry.check(service)
    await con.execute(
        _INSERT_OUTBOX, uuid.UUID(entry.event_id), orjson.dumps(entry.to_json(service)).decode()
    )
