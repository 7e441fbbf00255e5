"""A denied PHI-related attempt lands in the service's audit outbox."""

from __future__ import annotations

import orjson

from services.common.data.db import create_pool
from services.common.security.auth import Caller, Principal
from services.common.security.denials import OutboxDenialAuditor


async def test_denial_is_written_to_the_outbox(database_url: str) -> None:
    """actor, workspace, method and outcome DENIED; nothing from the request."""
    pool = await create_pool(database_url, schema="keysvc", application="test", max_size=1)
    try:
        auditor = OutboxDenialAuditor(pool, "keysvc")
        await auditor.record_denial(
            Caller(Principal("mallory"), "req-7"),
            "/phiseal.keys.v1.KeyService/GenerateKeyPair",
            "ws_1",
            "permission denied: this needs role admin or higher in workspace ws_1",
        )
        async with pool.acquire() as con:
            raw = await con.fetchval("SELECT event::text FROM keysvc.audit_outbox")
    finally:
        await pool.close()
    event = orjson.loads(raw)
    names = ("event_type", "actor_user_id", "workspace_id", "outcome", "request_id")
    picked = {k: event[k] for k in names}
    assert (picked, event["details"]["method"]) == (
        {
            "event_type": "Access Denied",
            "actor_user_id": "mallory",
            "workspace_id": "ws_1",
            "outcome": "denied",
            "request_id": "req-7",
        },
        "GenerateKeyPair",
    )
