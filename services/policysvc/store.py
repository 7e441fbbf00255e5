"""policysvc persistence: asyncpg SQL against the `policysvc` schema."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import asyncpg

from services.common.audit import AuditEntry, append_to_outbox
from services.common.db import COMMON_MIGRATIONS, MigrationSource
from services.common.errors import AlreadyExists, NotFound
from services.policysvc.catalog import Destination, DestinationType, HipaaEligibility, Workspace

SCHEMA = "policysvc"
SERVICE = "policysvc"
MIGRATIONS = (
    MigrationSource("common", COMMON_MIGRATIONS),
    MigrationSource("policysvc", Path(__file__).parent / "migrations"),
)

_INSERT_WORKSPACE = """
INSERT INTO workspaces (workspace_id, name, created_at, created_by) VALUES ($1, $2, $3, $4)
"""

_SELECT_WORKSPACE = """
SELECT workspace_id, name, created_at, created_by, hipaa_eligible, baa_reference, hipaa_set_by,
       hipaa_set_at
FROM workspaces WHERE workspace_id = $1
"""

_LOCK_WORKSPACE = """
SELECT workspace_id, name, created_at, created_by, hipaa_eligible, baa_reference, hipaa_set_by,
       hipaa_set_at
FROM workspaces WHERE workspace_id = $1
FOR UPDATE
"""

_UPDATE_HIPAA = """
UPDATE workspaces
SET hipaa_eligible = $2, baa_reference = $3, hipaa_set_by = $4, hipaa_set_at = $5
WHERE workspace_id = $1
"""

_INSERT_DESTINATION = """
INSERT INTO destinations (destination_id, workspace_id, name, type, created_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
"""

_SELECT_DESTINATION = """
SELECT seq, destination_id, workspace_id, name, type, created_at, created_by
FROM destinations WHERE destination_id = $1
"""

_LIST_DESTINATIONS = """
SELECT seq, destination_id, workspace_id, name, type, created_at, created_by
FROM destinations
WHERE workspace_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3
"""


async def _outbox(con: Any, entry: AuditEntry) -> None:
    # A pooled connection is a proxy of asyncpg.Connection that append_to_outbox's
    # annotation does not admit, though it behaves the same.
    await append_to_outbox(cast(asyncpg.Connection, con), entry, SERVICE)


def workspace_from(row: asyncpg.Record) -> Workspace:
    return Workspace(
        workspace_id=row["workspace_id"],
        name=row["name"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        hipaa=HipaaEligibility(
            eligible=row["hipaa_eligible"],
            baa_reference=row["baa_reference"],
            set_by=row["hipaa_set_by"],
            set_at=row["hipaa_set_at"],
        ),
    )


def destination_from(row: asyncpg.Record) -> Destination:
    return Destination(
        destination_id=row["destination_id"],
        workspace_id=row["workspace_id"],
        name=row["name"],
        type=DestinationType(row["type"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


class CatalogStore:
    """Workspaces and destinations."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert_workspace(self, workspace: Workspace, audit: AuditEntry) -> None:
        async with self._pool.acquire() as con, con.transaction():
            await con.execute(
                _INSERT_WORKSPACE,
                workspace.workspace_id,
                workspace.name,
                workspace.created_at,
                workspace.created_by,
            )
            await _outbox(con, audit)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        async with self._pool.acquire() as con:
            row = await con.fetchrow(_SELECT_WORKSPACE, workspace_id)
        return None if row is None else workspace_from(row)

    async def update_hipaa(
        self,
        workspace_id: str,
        hipaa: HipaaEligibility,
        audit: Callable[[Workspace], AuditEntry],
    ) -> Workspace | None:
        async with self._pool.acquire() as con, con.transaction():
            row = await con.fetchrow(_LOCK_WORKSPACE, workspace_id)
            if row is None:
                return None
            before = workspace_from(row)
            await con.execute(
                _UPDATE_HIPAA,
                workspace_id,
                hipaa.eligible,
                hipaa.baa_reference,
                hipaa.set_by,
                hipaa.set_at,
            )
            await _outbox(con, audit(before))
        return before

    async def insert_destination(self, destination: Destination, audit: AuditEntry) -> None:
        try:
            async with self._pool.acquire() as con, con.transaction():
                await con.execute(
                    _INSERT_DESTINATION,
                    destination.destination_id,
                    destination.workspace_id,
                    destination.name,
                    destination.type.value,
                    destination.created_at,
                    destination.created_by,
                )
                await _outbox(con, audit)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(
                f"workspace {destination.workspace_id} already has a destination named "
                f"{destination.name!r}; choose another name"
            ) from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(
                f"workspace {destination.workspace_id} does not exist; create it first"
            ) from None

    async def get_destination(self, destination_id: str) -> Destination | None:
        async with self._pool.acquire() as con:
            row = await con.fetchrow(_SELECT_DESTINATION, destination_id)
        return None if row is None else destination_from(row)

    async def list_destinations(
        self, workspace_id: str, after: int, limit: int
    ) -> Sequence[tuple[int, Destination]]:
        async with self._pool.acquire() as con:
            rows = await con.fetch(_LIST_DESTINATIONS, workspace_id, after, limit)
        return [(row["seq"], destination_from(row)) for row in rows]
