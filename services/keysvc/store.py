"""keysvc persistence: asyncpg SQL against the `keysvc` schema."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import asyncpg

from services.common.audit import AuditEntry
from services.common.data.db import COMMON_MIGRATIONS, MigrationSource
from services.common.data.outbox import append_to_outbox
from services.common.errors import Aborted
from services.keysvc.crypto import Algorithm
from services.keysvc.keys import KeyChange, KeyOrigin, KeyState, KeyVersion, StoredVersion

SCHEMA = "keysvc"
MIGRATIONS = (
    MigrationSource("common", COMMON_MIGRATIONS),
    MigrationSource("keysvc", Path(__file__).parent / "migrations"),
)
SERVICE = "keysvc"
# The LISTEN/NOTIFY channel WatchKeys follows; payload: KeyChange.to_payload().
CHANGES_CHANNEL = "keysvc_changes"

_COLUMNS = """
destination_id, version, workspace_id, algorithm, state, origin, public_key_pem,
public_key_jwk, fingerprint_sha256, created_at, created_by, activated_at, retired_at, confirm_by,
request_hash, challenge_hash
"""

# One lock per destination (transaction-scoped) so that concurrent Generate/Regenerate/Confirm
# calls on any replica see each other's result instead of racing.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('keysvc:' || $1, 0))"

_VERSIONS = f"""
SELECT {_COLUMNS} FROM key_versions WHERE destination_id = $1 ORDER BY version DESC
"""  # noqa: S608 - only the constant column list is interpolated

_INSERT = f"""
INSERT INTO key_versions ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
"""  # noqa: S608 - only the constant column list is interpolated

_SET_STATE = """
UPDATE key_versions
SET state = $3,
    activated_at = CASE WHEN $3 = 'active' THEN $4 ELSE activated_at END,
    retired_at = CASE WHEN $3 = 'retired' THEN $4 ELSE retired_at END,
    expired_at = CASE WHEN $3 = 'expired' THEN $4 ELSE expired_at END
WHERE destination_id = $1 AND version = $2
"""

_EXPIRE_DUE = f"""
UPDATE key_versions SET state = 'expired', expired_at = $1
WHERE state = 'pending' AND confirm_by <= $1
RETURNING {_COLUMNS}
"""  # noqa: S608 - only the constant column list is interpolated

_NOTIFY = "SELECT pg_notify($1, $2)"


def _key(row: asyncpg.Record) -> StoredVersion:
    key = KeyVersion(
        destination_id=row["destination_id"],
        workspace_id=row["workspace_id"],
        version=row["version"],
        algorithm=Algorithm(row["algorithm"]),
        state=KeyState(row["state"]),
        origin=KeyOrigin(row["origin"]),
        public_key_pem=row["public_key_pem"],
        public_key_jwk=row["public_key_jwk"],
        fingerprint_sha256=row["fingerprint_sha256"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        activated_at=row["activated_at"],
        retired_at=row["retired_at"],
        confirm_by=row["confirm_by"],
    )
    return StoredVersion(key, row["request_hash"], row["challenge_hash"])


def _connection(con: Any) -> asyncpg.Connection:
    # A pool hands out a proxy that behaves as the Connection the outbox helper is typed for.
    return cast(asyncpg.Connection, con)


class PgKeyTransaction:
    """One destination's rows inside an open transaction."""

    def __init__(self, con: asyncpg.Connection, destination_id: str) -> None:
        self._con = con
        self._destination_id = destination_id

    async def versions(self) -> list[StoredVersion]:
        return [_key(r) for r in await self._con.fetch(_VERSIONS, self._destination_id)]

    async def insert(
        self, key: KeyVersion, request_hash: bytes | None, challenge_hash: bytes | None
    ) -> None:
        try:
            await self._con.execute(
                _INSERT,
                key.destination_id,
                key.version,
                key.workspace_id,
                key.algorithm.value,
                key.state.value,
                key.origin.value,
                key.public_key_pem,
                key.public_key_jwk,
                key.fingerprint_sha256,
                key.created_at,
                key.created_by,
                key.activated_at,
                key.retired_at,
                key.confirm_by,
                request_hash,
                challenge_hash,
            )
        except asyncpg.UniqueViolationError:
            # The destination lock makes this unreachable between keysvc replicas; kept as
            # the last line of defence (one active, one pending, unique versions).
            raise Aborted(
                f"a concurrent change to destination {key.destination_id}'s keys won; "
                "read the key versions and retry"
            ) from None
        await self._notify(KeyChange(key.destination_id, key.version, key.state))

    async def set_state(self, version: int, state: KeyState, at: datetime) -> None:
        await self._con.execute(_SET_STATE, self._destination_id, version, state.value, at)
        await self._notify(KeyChange(self._destination_id, version, state))

    async def audit(self, entry: AuditEntry) -> None:
        await append_to_outbox(self._con, entry, SERVICE)

    async def _notify(self, change: KeyChange) -> None:
        # Delivered by PostgreSQL only if and when this transaction commits.
        await self._con.execute(_NOTIFY, CHANGES_CHANNEL, change.to_payload())


class PgKeyStore:
    """KeyStore over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def locked(self, destination_id: str) -> AsyncIterator[PgKeyTransaction]:
        async with self._pool.acquire() as con, con.transaction():
            await con.execute(_LOCK, destination_id)
            yield PgKeyTransaction(_connection(con), destination_id)

    @asynccontextmanager
    async def reading(self, destination_id: str) -> AsyncIterator[PgKeyTransaction]:
        async with self._pool.acquire() as con, con.transaction():
            yield PgKeyTransaction(_connection(con), destination_id)

    async def expire_due(
        self, now: datetime, audit: Callable[[KeyVersion], AuditEntry]
    ) -> list[KeyVersion]:
        # One UPDATE ... RETURNING: when several replicas sweep at once each row goes to one.
        async with self._pool.acquire() as con, con.transaction():
            expired = [_key(r).key for r in await con.fetch(_EXPIRE_DUE, now)]
            for key in expired:
                await append_to_outbox(_connection(con), audit(key), SERVICE)
                await con.execute(
                    _NOTIFY,
                    CHANGES_CHANNEL,
                    KeyChange(key.destination_id, key.version, key.state).to_payload(),
                )
            return expired
