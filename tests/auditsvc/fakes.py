"""An in-memory AuditStore (test_audit_store_contract keeps it equal to the PostgreSQL one).

Its ``records`` and ``checkpoints`` are plain lists a test may edit, as a superuser with the
triggers switched off could edit the tables: that is how the domain tests tamper.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

import orjson

from services.auditsvc import chain
from services.auditsvc.audit_log import AppendResult, Event, ExportSnapshot, Filter


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


class FakeAuditStore:
    """The audit log's tables as lists: records and checkpoints per workspace, keys by id."""

    def __init__(self) -> None:
        self.records: dict[str, list[chain.ChainRecord]] = {}
        self.checkpoints: dict[str, list[chain.Checkpoint]] = {}
        self.keys: dict[str, str] = {}
        self._heads: dict[str, tuple[int, str]] = {}
        self._event_ids: set[str] = set()

    async def register_key(self, key_id: str, pem: str) -> None:
        self.keys.setdefault(key_id, pem)

    async def append(self, events: Sequence[Event], recorded_at: datetime) -> AppendResult:
        recorded = 0
        for event in events:
            if event.event_id in self._event_ids:
                continue  # a duplicate, in this batch or before
            self._event_ids.add(event.event_id)
            sequence, prev_hash = self._heads.get(event.workspace_id, (0, chain.GENESIS_HASH))
            fields = event.fields(sequence + 1, recorded_at)
            # Details read back from jsonb: the same JSON value, as a new object.
            fields["details"] = orjson.loads(orjson.dumps(fields["details"]))
            sealed = chain.seal(prev_hash, fields)
            self.records.setdefault(event.workspace_id, []).append(sealed)
            self._heads[event.workspace_id] = (sequence + 1, sealed.hash)
            recorded += 1
        return AppendResult(recorded=recorded, duplicates=len(events) - recorded)

    def _selected(self, flt: Filter, after: int) -> list[chain.ChainRecord]:
        rows = self.records.get(flt.workspace_id, [])
        return sorted(
            (r for r in rows if r.sequence > after and _matches(flt, r)), key=lambda r: r.sequence
        )

    async def query_and_record(
        self, flt: Filter, after: int, limit: int, viewed: Event, recorded_at: datetime
    ) -> list[chain.ChainRecord]:
        rows = self._selected(flt, after)[:limit]
        await self.append([viewed], recorded_at)
        return rows

    @contextlib.asynccontextmanager
    async def export(self, flt: Filter) -> AsyncIterator[ExportSnapshot]:
        # A snapshot: what later appends add is not part of this export.
        rows = self._selected(flt, 0)
        cps = list(self.checkpoints.get(flt.workspace_id, []))

        async def records() -> AsyncIterator[chain.ChainRecord]:
            for row in rows:
                yield row

        async def checkpoints(last: int) -> list[chain.Checkpoint]:
            return sorted(
                (c for c in cps if 1 <= c.sequence <= last), key=lambda c: (c.sequence, c.key_id)
            )

        yield ExportSnapshot(records(), checkpoints, dict(self.keys))

    async def verify_inputs(
        self, workspace_id: str, first: int, last: int
    ) -> tuple[list[chain.ChainRecord], list[chain.Checkpoint], dict[str, str], chain.Anchor]:
        start = max(first, 1)

        def within(sequence: int, low: int) -> bool:
            return sequence >= low and (not last or sequence <= last)

        # In stored order by sequence, as the SQL's ORDER BY returns them.
        records = sorted(
            (r for r in self.records.get(workspace_id, []) if within(r.sequence, start - 1)),
            key=lambda r: r.sequence,
        )
        cps = sorted(
            (c for c in self.checkpoints.get(workspace_id, []) if within(c.sequence, start)),
            key=lambda c: (c.sequence, c.key_id),
        )
        anchor = chain.Anchor()
        if start > 1:
            if records and records[0].sequence == start - 1:
                anchor = chain.Anchor(start - 1, records[0].hash)
                records = records[1:]
            else:
                anchor = chain.Anchor(start - 1, "")
        return records, cps, dict(self.keys), anchor

    async def checkpoint_heads(
        self, sign: Callable[[str, int, str], chain.Checkpoint], workspace_id: str | None
    ) -> int:
        signed = 0
        for ws, (sequence, _) in sorted(self._heads.items()):
            if workspace_id is not None and ws != workspace_id:
                continue
            latest = max((c.sequence for c in self.checkpoints.get(ws, [])), default=0)
            if sequence <= latest:
                continue
            # The head hash is read from the record itself, as the SQL does.
            head = next((r for r in self.records.get(ws, []) if r.sequence == sequence), None)
            if head is None:
                continue
            self.checkpoints.setdefault(ws, []).append(sign(ws, sequence, head.hash))
            signed += 1
        return signed
