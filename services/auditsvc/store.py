"""auditsvc persistence: asyncpg SQL against the `auditsvc` schema."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from services.auditsvc import chain
from services.auditsvc.audit_log import AppendResult, Event, ExportSnapshot, Filter, VerifyInputs
from services.auditsvc.checkpointer import ChainState
from services.common.data.db import MigrationSource

Connection = asyncpg.Connection | PoolConnectionProxy

SCHEMA = "auditsvc"
MIGRATIONS = (MigrationSource("auditsvc", Path(__file__).parent / "migrations"),)
# The group role auditsvc's login belongs to: INSERT and SELECT on the log, nothing else.
RUNTIME_ROLE = "phiseal_audit_writer"

_ENSURE_HEADS = """
INSERT INTO chain_heads (workspace_id, sequence, head_hash)
SELECT ws, 0, $2 FROM unnest($1::text[]) AS ws
ON CONFLICT DO NOTHING
"""

# Sorted so concurrent batches lock workspaces in one order and never deadlock.
_LOCK_HEADS = """
SELECT workspace_id, sequence, head_hash FROM chain_heads
WHERE workspace_id = ANY($1::text[])
ORDER BY workspace_id
FOR UPDATE
"""

# Waits for a concurrent insert of the same id, so a duplicate is never appended twice.
_CLAIM_EVENT_IDS = """
INSERT INTO event_ids (event_id, recorded_at)
SELECT id, $2 FROM unnest($1::uuid[]) AS id
ON CONFLICT DO NOTHING
RETURNING event_id
"""

_INSERT_RECORDS = """
INSERT INTO records (
    workspace_id, sequence, event_id, actor_user_id, event_type, end_user_id, event_time,
    outcome, target, request_id, service, access_reason, details, prev_hash, hash, recorded_at)
SELECT r.workspace_id, r.sequence, r.event_id, r.actor_user_id, r.event_type, r.end_user_id,
       r.event_time, r.outcome, r.target, r.request_id, r.service, r.access_reason,
       r.details::jsonb, r.prev_hash, r.hash, $16
FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[], $14::text[], $15::text[])
     AS r(workspace_id, sequence, event_id, actor_user_id, event_type, end_user_id, event_time,
          outcome, target, request_id, service, access_reason, details, prev_hash, hash)
"""

_ADVANCE_HEADS = """
UPDATE chain_heads AS h SET sequence = u.sequence, head_hash = u.head_hash
FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(workspace_id, sequence, head_hash)
WHERE h.workspace_id = u.workspace_id
"""

_COLUMNS = """
workspace_id, sequence, event_id, actor_user_id, event_type, end_user_id, event_time, outcome,
target, request_id, service, access_reason, details::text AS details, prev_hash, hash,
recorded_at
"""

# NULL parameters switch a condition off; LIMIT NULL means no limit.
_SELECT_FILTERED = f"""
SELECT {_COLUMNS} FROM records
WHERE workspace_id = $1 AND sequence > $2
  AND ($3::timestamptz IS NULL OR event_time >= $3)
  AND ($4::timestamptz IS NULL OR event_time < $4)
  AND ($5::text IS NULL OR actor_user_id = $5)
  AND ($6::text IS NULL OR event_type = $6)
  AND ($7::text IS NULL OR end_user_id = $7)
ORDER BY sequence
LIMIT $8
"""  # noqa: S608 - the f-string adds a constant column list, never input

_SELECT_RANGE = f"""
SELECT {_COLUMNS} FROM records
WHERE workspace_id = $1 AND sequence >= $2 AND ($3::bigint IS NULL OR sequence <= $3)
ORDER BY sequence
"""  # noqa: S608 - the f-string adds a constant column list, never input

_CHECKPOINT_COLUMNS = """
workspace_id, number, sequence, head_hash, prev_checkpoint_hash, signed_at, key_id, signature
"""

_SELECT_CHECKPOINTS = f"""
SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints
WHERE workspace_id = $1 AND sequence >= $2 AND ($3::bigint IS NULL OR sequence <= $3)
ORDER BY number
"""  # noqa: S608 - the f-string adds a constant column list, never input

_SELECT_HEAD = "SELECT sequence, head_hash FROM chain_heads WHERE workspace_id = $1"

# Every workspace with a chain head (or one the service remembers), one at a time.
_ROUND_HEADS = """
SELECT ws.workspace_id, h.sequence, h.head_hash
FROM (SELECT workspace_id FROM chain_heads WHERE ($1::text IS NULL OR workspace_id = $1)
      UNION SELECT unnest($2::text[])) AS ws
LEFT JOIN chain_heads h ON h.workspace_id = ws.workspace_id
ORDER BY ws.workspace_id
"""

_ROUND_LAST_CHECKPOINTS = f"""
SELECT c.* FROM unnest($1::text[]) AS ws(workspace_id)
CROSS JOIN LATERAL (
    SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints c
    WHERE c.workspace_id = ws.workspace_id ORDER BY c.number DESC LIMIT 1
) AS c
"""  # noqa: S608 - the f-string adds a constant column list, never input

# Records from each workspace's last checkpoint on: what must verify before the next signing.
_ROUND_RECORDS = f"""
SELECT {_COLUMNS} FROM records r
JOIN unnest($1::text[], $2::bigint[]) AS b(ws, base) ON r.workspace_id = b.ws
WHERE r.sequence >= b.base
ORDER BY r.workspace_id, r.sequence
"""  # noqa: S608 - the f-string adds a constant column list, never input

_INSERT_CHECKPOINTS = """
INSERT INTO checkpoints (
    workspace_id, number, sequence, head_hash, prev_checkpoint_hash, signed_at, key_id, signature)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::text[], $8::text[])
"""

# Replicas sign in turn, so each round sees the checkpoints the previous one committed.
_ROUND_LOCK = "SELECT pg_advisory_lock(hashtext('phiseal.auditsvc.checkpoints'))"
_ROUND_UNLOCK = "SELECT pg_advisory_unlock(hashtext('phiseal.auditsvc.checkpoints'))"

_ENSURE_PARTITIONS = "SELECT ensure_record_partitions($1)"

_DURABILITY = "SELECT current_setting('fsync'), current_setting('synchronous_commit')"


def _to_record(row: asyncpg.Record) -> chain.ChainRecord:
    fields = {
        "event_id": str(row["event_id"]),
        "workspace_id": row["workspace_id"],
        "actor_user_id": row["actor_user_id"],
        "event_type": row["event_type"],
        "end_user_id": row["end_user_id"],
        "timestamp": chain.format_time(row["event_time"]),
        "outcome": row["outcome"],
        "target": row["target"],
        "request_id": row["request_id"],
        "service": row["service"],
        "access_reason": row["access_reason"],
        "details": orjson.loads(row["details"]),
        "sequence": row["sequence"],
        "recorded_at": chain.format_time(row["recorded_at"]),
    }
    return chain.ChainRecord(fields=fields, prev_hash=row["prev_hash"], hash=row["hash"])


def _to_checkpoint(row: asyncpg.Record) -> chain.Checkpoint:
    return chain.Checkpoint(
        workspace_id=row["workspace_id"],
        sequence=row["sequence"],
        head_hash=row["head_hash"],
        signed_at=chain.format_time(row["signed_at"]),
        key_id=row["key_id"],
        signature=row["signature"],
        number=row["number"],
        prev_checkpoint_hash=row["prev_checkpoint_hash"],
    )


def _filter_args(flt: Filter) -> list[Any]:
    return [
        flt.start_time,
        flt.end_time,
        flt.actor_user_id or None,
        flt.event_type or None,
        flt.end_user_id or None,
    ]


async def _append(con: Connection, events: Sequence[Event], recorded_at: datetime) -> AppendResult:
    """Appends in the caller's transaction; duplicates (by event_id) are skipped."""
    # Duplicates inside one batch count as duplicates too.
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    workspaces = sorted({e.workspace_id for e in unique.values()})
    await con.execute(_ENSURE_HEADS, workspaces, chain.GENESIS_HASH)
    heads = {
        row["workspace_id"]: (row["sequence"], row["head_hash"])
        for row in await con.fetch(_LOCK_HEADS, workspaces)
    }
    claimed = {
        str(row["event_id"]) for row in await con.fetch(_CLAIM_EVENT_IDS, list(unique), recorded_at)
    }
    columns: list[list[Any]] = [[] for _ in range(15)]
    for event in unique.values():
        if event.event_id not in claimed:
            continue
        sequence, prev_hash = heads[event.workspace_id]
        sealed = chain.seal(prev_hash, event.fields(sequence + 1, recorded_at))
        heads[event.workspace_id] = (sequence + 1, sealed.hash)
        values = (
            event.workspace_id,
            sequence + 1,
            event.event_id,
            event.actor_user_id,
            event.event_type,
            event.end_user_id,
            event.timestamp,
            event.outcome,
            event.target,
            event.request_id,
            event.service,
            event.access_reason,
            orjson.dumps(sealed.fields["details"]).decode(),
            sealed.prev_hash,
            sealed.hash,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    if claimed:
        await con.execute(_INSERT_RECORDS, *columns, recorded_at)
        await con.execute(
            _ADVANCE_HEADS,
            list(heads),
            [seq for seq, _ in heads.values()],
            [h for _, h in heads.values()],
        )
    advanced = {ws: head for ws, head in heads.items() if head[0] > 0}
    return AppendResult(
        recorded=len(claimed), duplicates=len(events) - len(claimed), heads=advanced
    )


class AuditStore:
    """The audit log's tables; every method is one unit of work."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def append(self, events: Sequence[Event], recorded_at: datetime) -> AppendResult:
        async with self._pool.acquire() as con, con.transaction():
            return await _append(con, events, recorded_at)

    async def query_and_record(
        self, flt: Filter, after: int, limit: int, viewed: Event, recorded_at: datetime
    ) -> tuple[list[chain.ChainRecord], AppendResult]:
        """The page and its 'Viewed' record in one transaction: no read goes unrecorded."""
        async with self._pool.acquire() as con, con.transaction():
            rows = await con.fetch(
                _SELECT_FILTERED, flt.workspace_id, after, *_filter_args(flt), limit
            )
            appended = await _append(con, [viewed], recorded_at)
        return [_to_record(r) for r in rows], appended

    @contextlib.asynccontextmanager
    async def export(self, flt: Filter) -> AsyncIterator[ExportSnapshot]:
        """A consistent snapshot (REPEATABLE READ) streamed through a server-side cursor."""
        async with (
            self._pool.acquire() as con,
            con.transaction(isolation="repeatable_read", readonly=True),
        ):
            cursor = con.cursor(
                _SELECT_FILTERED, flt.workspace_id, 0, *_filter_args(flt), None, prefetch=500
            )

            async def records() -> AsyncIterator[chain.ChainRecord]:
                async for row in cursor:
                    yield _to_record(row)

            async def checkpoints(last: int) -> list[chain.Checkpoint]:
                rows = await con.fetch(_SELECT_CHECKPOINTS, flt.workspace_id, 1, last)
                return [_to_checkpoint(r) for r in rows]

            yield ExportSnapshot(records(), checkpoints)

    async def verify_inputs(self, workspace_id: str, first: int, last: int) -> VerifyInputs:
        """Records first..last (and the one before, as the anchor), checkpoints, the head."""
        start = max(first, 1)
        async with (
            self._pool.acquire() as con,
            con.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await con.fetch(_SELECT_RANGE, workspace_id, start - 1, last or None)
            cps = await con.fetch(_SELECT_CHECKPOINTS, workspace_id, start, last or None)
            head = await con.fetchrow(_SELECT_HEAD, workspace_id)
        records = [_to_record(r) for r in rows]
        anchor = chain.Anchor()
        if start > 1:
            if records and records[0].sequence == start - 1:
                anchor = chain.Anchor(start - 1, records[0].hash)
                records = records[1:]
            else:
                anchor = chain.Anchor(start - 1, "")  # missing predecessor: shows as a break
        return VerifyInputs(
            records=records,
            checkpoints=[_to_checkpoint(r) for r in cps],
            anchor=anchor,
            head=(head["sequence"], head["head_hash"]) if head else None,
        )

    @contextlib.asynccontextmanager
    async def signing_round(
        self, workspace_id: str | None, known: Sequence[str]
    ) -> AsyncIterator[_SigningRound]:
        """One consistent snapshot of every chain to sign, under a lock replicas share; the
        checkpoints inserted commit when the block ends without an exception."""
        async with self._pool.acquire() as con:
            await con.execute(_ROUND_LOCK)
            try:
                # The snapshot starts after the lock: it sees every earlier round's commit.
                async with con.transaction(isolation="repeatable_read"):
                    wanted = [w for w in known if workspace_id in (None, w)]
                    heads = await con.fetch(_ROUND_HEADS, workspace_id, wanted)
                    names = [h["workspace_id"] for h in heads]
                    last = {
                        r["workspace_id"]: _to_checkpoint(r)
                        for r in await con.fetch(_ROUND_LAST_CHECKPOINTS, names)
                    }
                    bases = [last[n].sequence if n in last else 1 for n in names]
                    records: dict[str, list[chain.ChainRecord]] = {n: [] for n in names}
                    for row in await con.fetch(_ROUND_RECORDS, names, bases):
                        records[row["workspace_id"]].append(_to_record(row))
                    states = [
                        ChainState(
                            workspace_id=h["workspace_id"],
                            head=None if h["sequence"] is None else (h["sequence"], h["head_hash"]),
                            last_checkpoint=last.get(h["workspace_id"]),
                            records=records[h["workspace_id"]],
                        )
                        for h in heads
                    ]
                    yield _SigningRound(con, states)
            finally:
                await con.execute(_ROUND_UNLOCK)

    async def ensure_partitions(self, months_ahead: int) -> int:
        async with self._pool.acquire() as con:
            made: int = await con.fetchval(_ENSURE_PARTITIONS, months_ahead)
            return made

    async def durability(self) -> tuple[str, str]:
        """(fsync, synchronous_commit) as the server runs them."""
        async with self._pool.acquire() as con:
            row = await con.fetchrow(_DURABILITY)
        assert row is not None
        return str(row[0]), str(row[1])


class _SigningRound:
    def __init__(self, con: Connection, states: list[ChainState]) -> None:
        self._con = con
        self.states = states

    async def insert(self, checkpoints: Sequence[chain.Checkpoint]) -> None:
        if not checkpoints:
            return
        await self._con.execute(
            _INSERT_CHECKPOINTS,
            [c.workspace_id for c in checkpoints],
            [c.number for c in checkpoints],
            [c.sequence for c in checkpoints],
            [c.head_hash for c in checkpoints],
            [c.prev_checkpoint_hash for c in checkpoints],
            [chain.parse_time(c.signed_at) for c in checkpoints],
            [c.key_id for c in checkpoints],
            [c.signature for c in checkpoints],
        )
