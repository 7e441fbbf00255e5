"""policysvc persistence: asyncpg SQL against the `policysvc` schema."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import asyncpg
import orjson

from services.common.audit import AuditEntry
from services.common.data.db import COMMON_MIGRATIONS, MigrationSource
from services.common.data.outbox import append_to_outbox
from services.common.errors import Aborted, AlreadyExists, NotFound
from services.common.vocabulary import EncryptionFormat
from services.policysvc.analysis import ClassifierState
from services.policysvc.catalog import Destination, DestinationType, HipaaEligibility, Workspace
from services.policysvc.classification import (
    Classification,
    Matcher,
    MatcherTarget,
    MatchKind,
    Override,
    Signals,
)
from services.policysvc.policy import Concerning, Decide, Policy, PolicyContext, no_paths

SCHEMA = "policysvc"
SERVICE = "policysvc"
# Policy changes are announced on this LISTEN/NOTIFY channel (WatchPolicies).
CHANGES_CHANNEL = "policysvc_changes"
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


_WORKSPACE_EXISTS = "SELECT EXISTS (SELECT 1 FROM workspaces WHERE workspace_id = $1)"

_LOCK_WORKSPACE_ID = "SELECT workspace_id FROM workspaces WHERE workspace_id = $1 FOR UPDATE"

_SELECT_MATCHERS = """
SELECT matcher_id, name, target, kind, pattern, classification, created_at, created_by
FROM matchers WHERE workspace_id = $1 ORDER BY seq
"""

_COUNT_MATCHERS = "SELECT count(*) FROM matchers WHERE workspace_id = $1"

_INSERT_MATCHER = """
INSERT INTO matchers (matcher_id, workspace_id, name, target, kind, pattern, classification,
                      created_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

_DELETE_MATCHER = """
DELETE FROM matchers WHERE workspace_id = $1 AND matcher_id = $2
RETURNING matcher_id, name, target, kind, pattern, classification, created_at, created_by
"""

# Evidence is read at the paths a request classifies only ($2), never a workspace's whole store.
_SELECT_OVERRIDES = """
SELECT path, classification, set_by, set_at FROM classification_overrides
WHERE workspace_id = $1 AND path = ANY($2::text[])
"""

_SELECT_OVERRIDE_FOR_UPDATE = """
SELECT classification FROM classification_overrides
WHERE workspace_id = $1 AND path = $2
FOR UPDATE
"""

_UPSERT_OVERRIDE = """
INSERT INTO classification_overrides (workspace_id, path, classification, set_by, set_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, path) DO UPDATE
SET classification = EXCLUDED.classification, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at
"""

_DELETE_OVERRIDE = "DELETE FROM classification_overrides WHERE workspace_id = $1 AND path = $2"

_SELECT_VALUE_MATCHES = """
SELECT path, matcher_id FROM value_matches WHERE workspace_id = $1 AND path = ANY($2::text[])
"""
_SELECT_SIGNALS = """
SELECT path, signal FROM sample_signals WHERE workspace_id = $1 AND path = ANY($2::text[])
"""

_INSERT_SIGNALS = """
INSERT INTO sample_signals (workspace_id, path, signal)
SELECT $1, s.path, s.signal FROM unnest($2::text[], $3::text[]) AS s (path, signal)
ON CONFLICT DO NOTHING
"""

_INSERT_SAMPLE_PATHS = """
INSERT INTO sample_paths (workspace_id, path)
SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING
"""

# A matcher removed meanwhile simply records nothing (the join finds no row).
_INSERT_VALUE_MATCHES = """
INSERT INTO value_matches (workspace_id, path, matcher_id)
SELECT $1, hit.path, m.matcher_id
FROM unnest($2::text[], $3::text[]) AS hit (path, matcher_id)
JOIN matchers m ON m.matcher_id = hit.matcher_id AND m.workspace_id = $1
ON CONFLICT DO NOTHING
"""

_COUNT_SAMPLE_PATHS = "SELECT count(*) FROM sample_paths WHERE workspace_id = $1"

_COUNT_OVERRIDES = "SELECT count(*) FROM classification_overrides WHERE workspace_id = $1"

# One page of the known paths with the request's own ($2), in code point order (COLLATE "C"
# compares UTF-8 bytes: the order Python sorts str in). Sorting a workspace's 20,000 paths is
# the database's work, not the event loop's.
_KNOWN_PAGE = """
SELECT path FROM (
    SELECT path FROM sample_paths WHERE workspace_id = $1
    UNION
    SELECT path FROM classification_overrides WHERE workspace_id = $1
    UNION
    SELECT unnest(head.fields) FROM (
        SELECT DISTINCT ON (destination_id) fields
        FROM policy_versions WHERE workspace_id = $1
        ORDER BY destination_id, version DESC
    ) AS head
    UNION
    SELECT unnest($2::text[])
) AS known (path)
ORDER BY path COLLATE "C" OFFSET $3 LIMIT $4
"""


def matcher_from(row: asyncpg.Record) -> Matcher:
    return Matcher(
        matcher_id=row["matcher_id"],
        name=row["name"],
        target=MatcherTarget(row["target"]),
        kind=MatchKind(row["kind"]),
        pattern=row["pattern"],
        classification=Classification(row["classification"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


async def classifier_state(con: Any, workspace_id: str, paths: Collection[str]) -> ClassifierState:
    """A workspace's matchers, with its overrides and sampled evidence at ``paths`` only (what
    classifying those paths needs: the cost follows the request, not the workspace's store)."""
    matchers = [matcher_from(r) for r in await con.fetch(_SELECT_MATCHERS, workspace_id)]
    wanted = sorted(set(paths))
    if not wanted:
        return ClassifierState(matchers, [], {}, {})
    overrides = [
        Override(r["path"], Classification(r["classification"]), r["set_by"], r["set_at"])
        for r in await con.fetch(_SELECT_OVERRIDES, workspace_id, wanted)
    ]
    hits: dict[str, set[str]] = {}
    for row in await con.fetch(_SELECT_VALUE_MATCHES, workspace_id, wanted):
        hits.setdefault(row["path"], set()).add(row["matcher_id"])
    stored: dict[str, list[str]] = {}
    for row in await con.fetch(_SELECT_SIGNALS, workspace_id, wanted):
        stored.setdefault(row["path"], []).append(row["signal"])
    return ClassifierState(
        matchers,
        overrides,
        {p: frozenset(h) for p, h in hits.items()},
        {p: Signals.decode(found) for p, found in stored.items()},
    )


class PrivacyStore:
    """Custom matchers, overrides and what samples showed, per workspace."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def workspace_exists(self, workspace_id: str) -> bool:
        async with self._pool.acquire() as con:
            return bool(await con.fetchval(_WORKSPACE_EXISTS, workspace_id))

    async def classifier_state(
        self, workspace_id: str, paths: Collection[str] = ()
    ) -> ClassifierState:
        async with self._pool.acquire() as con, con.transaction(isolation="repeatable_read"):
            return await classifier_state(con, workspace_id, paths)

    async def known_page(
        self, workspace_id: str, extra: Collection[str], after: int, size: int
    ) -> tuple[list[str], bool]:
        async with self._pool.acquire() as con:
            rows = await con.fetch(_KNOWN_PAGE, workspace_id, sorted(extra), after, size + 1)
        return [row["path"] for row in rows[:size]], len(rows) > size

    async def record_samples(
        self,
        workspace_id: str,
        paths: Iterable[str],
        hits: Mapping[str, frozenset[str]],
        check: Callable[[int], None],
        signals: Mapping[str, Signals] | None = None,
        audit: AuditEntry | None = None,
    ) -> None:
        pairs = [(path, matcher_id) for path, ids in hits.items() for matcher_id in sorted(ids)]
        found = [(p, signal) for p, s in (signals or {}).items() for signal in s.encode()]
        async with self._pool.acquire() as con, con.transaction():
            # The workspace row lock serialises recorders, so the cap holds under concurrency;
            # check raising rolls the insert (and the audit record) back.
            await con.fetchval(_LOCK_WORKSPACE_ID, workspace_id)
            await con.execute(_INSERT_SAMPLE_PATHS, workspace_id, sorted(paths))
            check(await con.fetchval(_COUNT_SAMPLE_PATHS, workspace_id))
            if audit is not None:
                await _outbox(con, audit)
            if found:
                await con.execute(
                    _INSERT_SIGNALS, workspace_id, [p for p, _ in found], [s for _, s in found]
                )
            if pairs:
                await con.execute(
                    _INSERT_VALUE_MATCHES,
                    workspace_id,
                    [p for p, _ in pairs],
                    [m for _, m in pairs],
                )

    async def set_override(
        self,
        workspace_id: str,
        path: str,
        override: Override | None,
        audit: Callable[[Classification | None], AuditEntry],
        check: Callable[[int], None],
    ) -> bool:
        async with self._pool.acquire() as con, con.transaction():
            if await con.fetchval(_LOCK_WORKSPACE_ID, workspace_id) is None:
                return False
            previous = await con.fetchval(_SELECT_OVERRIDE_FOR_UPDATE, workspace_id, path)
            if previous is None and override is not None:
                check(await con.fetchval(_COUNT_OVERRIDES, workspace_id) + 1)
            if override is None:
                await con.execute(_DELETE_OVERRIDE, workspace_id, path)
            else:
                await con.execute(
                    _UPSERT_OVERRIDE,
                    workspace_id,
                    path,
                    override.classification.value,
                    override.set_by,
                    override.set_at,
                )
            await _outbox(con, audit(None if previous is None else Classification(previous)))
        return True

    async def add_matcher(
        self,
        workspace_id: str,
        matcher: Matcher,
        check: Callable[[int], None],
        audit: AuditEntry,
    ) -> bool:
        async with self._pool.acquire() as con, con.transaction():
            # The workspace row lock serialises adds, so the limit holds under concurrency.
            if await con.fetchval(_LOCK_WORKSPACE_ID, workspace_id) is None:
                return False
            check(await con.fetchval(_COUNT_MATCHERS, workspace_id))
            await con.execute(
                _INSERT_MATCHER,
                matcher.matcher_id,
                workspace_id,
                matcher.name,
                matcher.target.value,
                matcher.kind.value,
                matcher.pattern,
                matcher.classification.value,
                matcher.created_at,
                matcher.created_by,
            )
            await _outbox(con, audit)
        return True

    async def remove_matcher(
        self, workspace_id: str, matcher_id: str, audit: Callable[[Matcher], AuditEntry]
    ) -> Matcher | None:
        async with self._pool.acquire() as con, con.transaction():
            row = await con.fetchrow(_DELETE_MATCHER, workspace_id, matcher_id)
            if row is None:
                return None
            removed = matcher_from(row)
            await _outbox(con, audit(removed))
        return removed


_LOCK_DESTINATION = """
SELECT seq, destination_id, workspace_id, name, type, created_at, created_by
FROM destinations WHERE destination_id = $1
FOR UPDATE
"""

_SELECT_HEAD = """
SELECT destination_id, version, workspace_id, enabled, format, fields, created_at, created_by,
       change_summary
FROM policy_versions WHERE destination_id = $1
ORDER BY version DESC
LIMIT 1
"""

_LIST_VERSIONS = """
SELECT destination_id, version, workspace_id, enabled, format, fields, created_at, created_by,
       change_summary
FROM policy_versions WHERE destination_id = $1 AND version < $2
ORDER BY version DESC
LIMIT $3
"""

_INSERT_VERSION = """
INSERT INTO policy_versions (destination_id, version, workspace_id, enabled, format, fields,
                             created_at, created_by, change_summary)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

# Delivered to every LISTENer when the transaction commits, never before or on rollback.
_NOTIFY = "SELECT pg_notify($1, $2)"


def policy_from(row: asyncpg.Record) -> Policy:
    return Policy(
        destination_id=row["destination_id"],
        workspace_id=row["workspace_id"],
        version=row["version"],
        enabled=row["enabled"],
        format=EncryptionFormat(row["format"]),
        fields=tuple(row["fields"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        change_summary=row["change_summary"],
    )


def notify_payload(policy: Policy) -> str:
    """The NOTIFY payload WatchPolicies forwards: which destination, which version."""
    return orjson.dumps(
        {"destination_id": policy.destination_id, "version": policy.version}
    ).decode()


class PolicyStore:
    """Policy versions; every change locks its destination, audits and notifies in one go."""

    def __init__(self, pool: asyncpg.Pool, channel: str) -> None:
        self._pool = pool
        self._channel = channel

    async def _context(
        self, con: Any, destination_id: str, concerning: Concerning, *, lock: bool
    ) -> PolicyContext | None:
        sql = _LOCK_DESTINATION if lock else _SELECT_DESTINATION
        row = await con.fetchrow(sql, destination_id)
        if row is None:
            return None
        destination = destination_from(row)
        workspace = workspace_from(await con.fetchrow(_SELECT_WORKSPACE, destination.workspace_id))
        head_row = await con.fetchrow(_SELECT_HEAD, destination_id)
        head = (
            Policy(destination_id, destination.workspace_id)
            if head_row is None
            else policy_from(head_row)
        )
        state = await classifier_state(con, destination.workspace_id, concerning(head))
        return PolicyContext(workspace, destination, head, state)

    async def change_policy(
        self, destination_id: str, decide: Decide, concerning: Concerning = no_paths
    ) -> Policy | None:
        try:
            async with self._pool.acquire() as con, con.transaction():
                ctx = await self._context(con, destination_id, concerning, lock=True)
                if ctx is None:
                    return None
                change = await decide(ctx)
                policy = change.policy
                await con.execute(
                    _INSERT_VERSION,
                    policy.destination_id,
                    policy.version,
                    policy.workspace_id,
                    policy.enabled,
                    policy.format.value,
                    list(policy.fields),
                    policy.created_at,
                    policy.created_by,
                    policy.change_summary,
                )
                await _outbox(con, change.audit)
                await con.execute(_NOTIFY, self._channel, notify_payload(policy))
        except asyncpg.UniqueViolationError:
            raise Aborted(
                f"the policy of destination {destination_id} changed concurrently; read it "
                "again with GetPolicy and retry"
            ) from None
        return policy

    async def workspace_of(self, destination_id: str) -> str | None:
        async with self._pool.acquire() as con:
            row = await con.fetchrow(_SELECT_DESTINATION, destination_id)
        return None if row is None else str(row["workspace_id"])

    async def load_context(
        self, destination_id: str, concerning: Concerning = no_paths
    ) -> PolicyContext | None:
        async with self._pool.acquire() as con, con.transaction(isolation="repeatable_read"):
            return await self._context(con, destination_id, concerning, lock=False)

    async def record_audit(self, entry: AuditEntry) -> None:
        async with self._pool.acquire() as con, con.transaction():
            await _outbox(con, entry)

    async def get_policy(
        self, destination_id: str, audit: Callable[[Policy], AuditEntry] | None
    ) -> Policy | None:
        async with self._pool.acquire() as con, con.transaction():
            destination = await con.fetchrow(_SELECT_DESTINATION, destination_id)
            if destination is None:
                return None
            row = await con.fetchrow(_SELECT_HEAD, destination_id)
            policy = (
                Policy(destination_id, destination["workspace_id"])
                if row is None
                else policy_from(row)
            )
            # The read is audited before it is answered: no audit row, no answer.
            if audit is not None:
                await _outbox(con, audit(policy))
        return policy

    async def list_versions(
        self,
        destination_id: str,
        before: int,
        limit: int,
        audit: Callable[[Policy], AuditEntry] | None,
    ) -> list[Policy] | None:
        async with self._pool.acquire() as con, con.transaction():
            destination = await con.fetchrow(_SELECT_DESTINATION, destination_id)
            if destination is None:
                return None
            rows = [
                policy_from(r)
                for r in await con.fetch(_LIST_VERSIONS, destination_id, before, limit)
            ]
            if audit is not None:
                await _outbox(
                    con,
                    audit(rows[0] if rows else Policy(destination_id, destination["workspace_id"])),
                )
        return rows
