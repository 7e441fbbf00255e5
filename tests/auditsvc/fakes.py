"""An in-memory AuditStore (test_audit_store_contract keeps it equal to the PostgreSQL one).

Its ``records``, ``checkpoints`` and ``heads`` are plain containers a test may edit, as a
superuser with the triggers switched off could edit the tables: that is how the domain tests
tamper.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import asyncpg
import orjson

from services.auditsvc import chain
from services.auditsvc.audit_log import AppendResult, Event, ExportSnapshot, Filter, VerifyInputs
from services.auditsvc.checkpointer import ChainState


def _matches(flt: Filter, record: chain.ChainRecord) -> bool:
    fields = record.fields
    at = chain.parse_time(str(fields["timestamp"]))
    return (
        fields["workspace_id"] == flt.workspace_id
        and (flt.start_time is None or at >= flt.start_time)
        and (flt.end_time is None or at < flt.end_time)
        and (not flt.actor_user_id or fields["actor_user_id"] == flt.actor_user_id)
        and (not flt.event_type or fields["event_type"] == flt.event_type)
        and (not flt.end_user_id or fields["end_user_id"] == flt.end_user_id)
    )


def _by_number(checkpoints: Sequence[chain.Checkpoint]) -> list[chain.Checkpoint]:
    return sorted(checkpoints, key=lambda c: c.number)


class FakeSigningRound:
    """A round's snapshot; its checkpoints are kept only when the round ends normally."""

    def __init__(self, states: list[ChainState], held: set[tuple[str, int]]) -> None:
        self.states = states
        self.inserted: list[chain.Checkpoint] = []
        self._held = held

    async def insert(self, checkpoints: Sequence[chain.Checkpoint]) -> None:
        for cp in checkpoints:
            # PRIMARY KEY (workspace_id, number): two replicas cannot fork the checkpoint chain.
            if (cp.workspace_id, cp.number) in self._held:
                raise asyncpg.UniqueViolationError(
                    f"checkpoint {cp.number} of {cp.workspace_id} exists"
                )
            self._held.add((cp.workspace_id, cp.number))
            self.inserted.append(cp)


class FakeAuditStore:
    """The audit log's tables as containers: records and checkpoints per workspace, and the
    chain_heads cache."""

    def __init__(self) -> None:
        self.records: dict[str, list[chain.ChainRecord]] = {}
        self.checkpoints: dict[str, list[chain.Checkpoint]] = {}
        self.heads: dict[str, tuple[int, str]] = {}
        self._event_ids: set[str] = set()
        # The advisory lock replicas share: rounds take turns.
        self._round_lock = asyncio.Lock()

    async def append(self, events: Sequence[Event], recorded_at: datetime) -> AppendResult:
        recorded = 0
        touched: set[str] = set()
        for event in events:
            ws = event.workspace_id
            touched.add(ws)
            # A workspace gets its head row even when every event of it was a duplicate.
            self.heads.setdefault(ws, (0, chain.GENESIS_HASH))
            if event.event_id in self._event_ids:
                continue  # a duplicate, in this batch or before
            self._event_ids.add(event.event_id)
            sequence, prev_hash = self.heads[ws]
            fields = event.fields(sequence + 1, recorded_at)
            # Details read back from jsonb: the same JSON value, as a new object.
            fields["details"] = orjson.loads(orjson.dumps(fields["details"]))
            sealed = chain.seal(prev_hash, fields)
            self.records.setdefault(ws, []).append(sealed)
            self.heads[ws] = (sequence + 1, sealed.hash)
            recorded += 1
        heads = {ws: self.heads[ws] for ws in touched if self.heads[ws][0] > 0}
        return AppendResult(recorded=recorded, duplicates=len(events) - recorded, heads=heads)

    def _selected(self, flt: Filter, after: int) -> list[chain.ChainRecord]:
        rows = self.records.get(flt.workspace_id, [])
        return sorted(
            (r for r in rows if r.sequence > after and _matches(flt, r)), key=lambda r: r.sequence
        )

    async def query_and_record(
        self, flt: Filter, after: int, limit: int, viewed: Event, recorded_at: datetime
    ) -> tuple[list[chain.ChainRecord], AppendResult]:
        rows = self._selected(flt, after)[:limit]
        return rows, await self.append([viewed], recorded_at)

    @contextlib.asynccontextmanager
    async def export(self, flt: Filter) -> AsyncIterator[ExportSnapshot]:
        # A snapshot: what later appends and rounds add is not part of this export.
        rows = self._selected(flt, 0)
        cps = _by_number(self.checkpoints.get(flt.workspace_id, []))

        async def records() -> AsyncIterator[chain.ChainRecord]:
            for row in rows:
                yield row

        async def checkpoints(last: int) -> list[chain.Checkpoint]:
            return [c for c in cps if 1 <= c.sequence <= last]

        yield ExportSnapshot(records(), checkpoints)

    async def verify_inputs(self, workspace_id: str, first: int, last: int) -> VerifyInputs:
        start = max(first, 1)

        def within(sequence: int, low: int) -> bool:
            return sequence >= low and (not last or sequence <= last)

        # In stored order by sequence, as the SQL's ORDER BY returns them.
        records = sorted(
            (r for r in self.records.get(workspace_id, []) if within(r.sequence, start - 1)),
            key=lambda r: r.sequence,
        )
        cps = _by_number(
            [c for c in self.checkpoints.get(workspace_id, []) if within(c.sequence, start)]
        )
        anchor = chain.Anchor()
        if start > 1:
            if records and records[0].sequence == start - 1:
                anchor = chain.Anchor(start - 1, records[0].hash)
                records = records[1:]
            else:
                anchor = chain.Anchor(start - 1, "")
        return VerifyInputs(records, cps, anchor, self.heads.get(workspace_id))

    @contextlib.asynccontextmanager
    async def signing_round(
        self, workspace_id: str | None, known: Sequence[str]
    ) -> AsyncIterator[FakeSigningRound]:
        async with self._round_lock:
            names = {ws for ws in self.heads if workspace_id in (None, ws)}
            names |= {ws for ws in known if workspace_id in (None, ws)}
            states = []
            for ws in sorted(names):
                last = max(self.checkpoints.get(ws, []), key=lambda c: c.number, default=None)
                base = last.sequence if last is not None else 1
                records = sorted(
                    (r for r in self.records.get(ws, []) if r.sequence >= base),
                    key=lambda r: r.sequence,
                )
                states.append(ChainState(ws, self.heads.get(ws), last, records))
            held = {(ws, c.number) for ws, cps in self.checkpoints.items() for c in cps}
            rnd = FakeSigningRound(states, held)
            yield rnd
            # Committed only when the block ended without an exception.
            for cp in rnd.inserted:
                self.checkpoints.setdefault(cp.workspace_id, []).append(cp)
