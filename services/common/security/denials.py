"""Denied PHI-related attempts made durable: a DenialAuditor writing to a service's outbox."""

from __future__ import annotations

import asyncpg

from services.common.audit import AuditEntry, Outcome
from services.common.data.outbox import append_to_outbox
from services.common.security.auth import Caller

EVENT_TYPE = "Access Denied"


def denial_entry(caller: Caller, method: str, workspace_id: str, reason: str) -> AuditEntry:
    """The audit record of one refused call: who, which RPC, where, why (no request values)."""
    return AuditEntry.by(
        caller,
        event_type=EVENT_TYPE,
        workspace_id=workspace_id,
        target=method.lstrip("/"),
        outcome=Outcome.DENIED,
        details={"method": method.rsplit("/", 1)[-1], "reason": reason},
    )


class OutboxDenialAuditor:
    """For services with an ``audit_outbox`` (keysvc, policysvc): one transaction per denial,
    since the denied action's own transaction never commits."""

    def __init__(self, pool: asyncpg.Pool, service: str) -> None:
        self._pool = pool
        self._service = service

    async def record_denial(
        self, caller: Caller, method: str, workspace_id: str, reason: str
    ) -> None:
        entry = denial_entry(caller, method, workspace_id, reason)
        async with self._pool.acquire() as con, con.transaction():
            await append_to_outbox(con, entry, self._service)
