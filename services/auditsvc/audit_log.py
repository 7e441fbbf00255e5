"""The audit log domain: validation, appends, audited reads and exports, verification."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auditsvc import chain
from services.auditsvc.checkpointer import Checkpointer, CheckpointJournal, RoundSource
from services.common.audit_rules import (
    MAX_TEXT,
    TEXT_FIELDS,
    check_record,
)
from services.common.data.paging import Page, encode_token
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.limits import check_count
from services.common.security.auth import Caller, Principal, PrincipalKind, Role
from services.common.security.authz import require
from services.common.server.metrics import UNCOUNTED, Incrementing

SERVICE = "auditsvc"
MAX_BATCH = 1000
_MAX_SEQUENCE = 2**63 - 1


def check_text(value: str, what: str) -> None:
    """A reader's text input within what a record can hold, refused under its own name (not
    as the 'Viewed' record's field it would otherwise fail in)."""
    if len(value) > MAX_TEXT or not value.isprintable():
        raise InvalidArgument(f"{what} must be printable text of at most {MAX_TEXT} characters")


@dataclass(frozen=True)
class Event:
    """One audited action as a service reports it."""

    event_id: str
    workspace_id: str
    actor_user_id: str
    event_type: str
    timestamp: datetime
    outcome: str
    end_user_id: str = ""
    target: str = ""
    request_id: str = ""
    service: str = ""
    access_reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def validated(self) -> Event:
        """A normalized copy (canonical UUID, UTC, normalized details), or InvalidArgument."""
        event_id, timestamp, details = check_record(
            event_id=self.event_id,
            event_type=self.event_type,
            outcome=self.outcome,
            timestamp=self.timestamp,
            texts={name: getattr(self, name) for name in TEXT_FIELDS},
            details=self.details,
        )
        return replace(self, event_id=event_id, timestamp=timestamp, details=details)

    def fields(self, sequence: int, recorded_at: datetime) -> dict[str, Any]:
        """The hashed fields of this event stored at ``sequence``."""
        return {
            "event_id": self.event_id,
            "workspace_id": self.workspace_id,
            "actor_user_id": self.actor_user_id,
            "event_type": self.event_type,
            "end_user_id": self.end_user_id,
            "timestamp": chain.format_time(self.timestamp),
            "outcome": self.outcome,
            "target": self.target,
            "request_id": self.request_id,
            "service": self.service,
            "access_reason": self.access_reason,
            "details": self.details,
            "sequence": sequence,
            "recorded_at": chain.format_time(recorded_at),
        }


@dataclass(frozen=True)
class Filter:
    workspace_id: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    actor_user_id: str = ""
    event_type: str = ""
    end_user_id: str = ""

    def check(self) -> None:
        if not self.workspace_id.strip():
            raise InvalidArgument("filter.workspace_id is required")
        for name in ("workspace_id", "actor_user_id", "event_type", "end_user_id"):
            check_text(getattr(self, name), f"filter.{name}")
        if self.start_time and self.end_time and self.start_time >= self.end_time:
            raise InvalidArgument("filter.start_time must be before filter.end_time")

    @property
    def whole_chain(self) -> bool:
        """True when the filter selects the workspace's entire chain."""
        return not (
            self.start_time
            or self.end_time
            or self.actor_user_id
            or self.event_type
            or self.end_user_id
        )

    def digest(self) -> str:
        """Binds a page token to the filter it was issued for."""
        text = "|".join(
            [
                self.workspace_id,
                chain.format_time(self.start_time) if self.start_time else "",
                chain.format_time(self.end_time) if self.end_time else "",
                self.actor_user_id,
                self.event_type,
                self.end_user_id,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def used(self) -> list[str]:
        """Names of the filters set: what the 'Viewed' record says (names, not values)."""
        names = ("start_time", "end_time", "actor_user_id", "event_type", "end_user_id")
        return [n for n in names if getattr(self, n)]


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


@dataclass(frozen=True)
class Refused:
    """An event RecordEvents received that could not even be read (kept for its place)."""

    event_id: str
    reason: str


@dataclass(frozen=True)
class Rejection:
    index: int
    event_id: str
    reason: str


@dataclass(frozen=True)
class AppendResult:
    recorded: int
    duplicates: int
    # The newest (sequence, hash) of each workspace appended to.
    heads: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    rejected: Sequence[Rejection] = ()


@dataclass(frozen=True)
class ExportSnapshot:
    """What an export reads in one consistent snapshot."""

    records: AsyncIterator[chain.ChainRecord]
    checkpoints: Callable[[int], Any]  # async (last_sequence) -> list[Checkpoint]


@dataclass(frozen=True)
class VerifyInputs:
    records: list[chain.ChainRecord]
    checkpoints: list[chain.Checkpoint]
    anchor: chain.Anchor
    head: tuple[int, str] | None  # the chain_heads row (a cache; compared, never trusted)


class AuditStore(RoundSource, Protocol):
    async def append(self, events: Sequence[Event], recorded_at: datetime) -> AppendResult: ...

    async def query_and_record(
        self, flt: Filter, after: int, limit: int, viewed: Event, recorded_at: datetime
    ) -> tuple[list[chain.ChainRecord], AppendResult]: ...

    def export(self, flt: Filter) -> Any:
        """An async context manager yielding an ExportSnapshot."""
        ...

    async def verify_inputs(self, workspace_id: str, first: int, last: int) -> VerifyInputs: ...


def require_service(principal: Principal) -> None:
    """Only peer services write audit records; the one place this rule lives."""
    if principal.kind is not PrincipalKind.SERVICE:
        raise PermissionDenied(
            "RecordEvents is for PHIseal services only: people's actions are recorded by the "
            "service they act through"
        )


CSV_COLUMNS = [*chain.RECORD_FIELDS, "prev_hash", "hash"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditCounts:
    """What the log counts for its operators (services.common.server.metrics); checkpoints and
    alarms are counted by the checkpointer."""

    records: Incrementing = UNCOUNTED  # records appended through RecordEvents
    duplicates: Incrementing = UNCOUNTED  # resent events already in the log (outbox retries)


class AuditLog:
    """Appends, audited reads and exports, verification and checkpoints."""

    def __init__(
        self,
        store: AuditStore,
        signing_key: Ed25519PrivateKey,
        trusted: Mapping[str, chain.TrustedKey],
        journal: CheckpointJournal,
        *,
        clock: Callable[[], datetime] = utc_now,
        chunk_bytes: int = 64 * 1024,
        counts: AuditCounts = AuditCounts(),
    ) -> None:
        self._store = store
        self._counts = counts
        self._clock = clock
        self._chunk = chunk_bytes
        self.checkpoints = Checkpointer(store, signing_key, trusted, journal, clock)
        self.key_id = chain.key_id(signing_key.public_key())

    async def _append(self, events: Sequence[Event]) -> AppendResult:
        result = await self._store.append(events, self._clock())
        self.checkpoints.appended(result.heads)
        return result

    async def record(self, caller: Caller, events: Sequence[Event | Refused]) -> AppendResult:
        """Appends the valid events; each invalid one is refused on its own (never the batch,
        which would stall the relay behind it)."""
        require_service(caller.principal)
        if not events:
            raise InvalidArgument("events is empty: send at least one event")
        check_count(len(events), MAX_BATCH, "events")
        valid: list[Event] = []
        rejected: list[Rejection] = []
        for index, event in enumerate(events):
            if isinstance(event, Refused):
                rejected.append(Rejection(index, event.event_id[:80], event.reason))
                continue
            try:
                valid.append(event.validated())
            except InvalidArgument as exc:
                rejected.append(Rejection(index, event.event_id[:80], exc.message))
        result = await self._append(valid) if valid else AppendResult(0, 0)
        self._counts.records.inc(result.recorded)
        self._counts.duplicates.inc(result.duplicates)
        return replace(result, rejected=rejected)

    def _self_audit(
        self, caller: Caller, event_type: str, flt: Filter, reason: str, **details: Any
    ) -> Event:
        return Event(
            event_id=str(uuid.uuid4()),
            workspace_id=flt.workspace_id,
            actor_user_id=caller.actor_id,
            event_type=event_type,
            timestamp=self._clock(),
            outcome="succeeded",
            end_user_id=flt.end_user_id,
            target=f"audit_log/{flt.workspace_id}",
            request_id=caller.request_id,
            service=SERVICE,
            access_reason=reason,
            details={"filters": flt.used(), **details},
        ).validated()

    async def query(
        self,
        caller: Caller,
        flt: Filter,
        page_size: int,
        page_token: str,
        access_reason: str,
    ) -> tuple[list[chain.ChainRecord], str]:
        """One page, and the token for the next ("" at the end). Audited before answering."""
        flt.check()
        check_text(access_reason, "access_reason")
        require(caller.principal, flt.workspace_id, Role.AUDITOR)
        # A token only continues the query (workspace and filters) it was issued for.
        scope = f"audit:{flt.digest()}"
        page = Page.parse(page_size, page_token, scope)
        viewed = self._self_audit(caller, "Audit Log Viewed", flt, access_reason)
        # One extra row says whether another page exists without a second query.
        rows, appended = await self._store.query_and_record(
            flt, page.after, page.size + 1, viewed, self._clock()
        )
        self.checkpoints.appended(appended.heads)
        records = rows[: page.size]
        more = len(rows) > page.size
        token = encode_token(scope, records[-1].sequence) if more else ""
        return records, token

    async def export(
        self,
        caller: Caller,
        flt: Filter,
        fmt: ExportFormat,
        access_reason: str,
    ) -> AsyncIterator[bytes]:
        """The export file in chunks. The 'Exported' record is committed before the first."""
        flt.check()
        check_text(access_reason, "access_reason")
        require(caller.principal, flt.workspace_id, Role.AUDITOR)
        exported = self._self_audit(
            caller, "Audit Log Exported", flt, access_reason, format=fmt.value
        )
        # Every checkpoint signed before this instant is committed before the export's own
        # round (rounds take turns), so it is in the export: the offline verifier holds the
        # journal to that.
        before = self._clock()
        await self._append([exported])
        # A fresh checkpoint covers everything exported, so the export verifies to its end.
        # It is signed only over a chain that verified: after a gap the export still streams
        # (it is evidence), with no new signature and the alarm stated in its header.
        await self.checkpoint(flt.workspace_id)
        return self._stream(flt, fmt, before)

    async def _stream(
        self, flt: Filter, fmt: ExportFormat, checkpoints_before: datetime
    ) -> AsyncIterator[bytes]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        async with self._store.export(flt) as snap:
            if fmt is ExportFormat.CSV:
                writer.writerow(CSV_COLUMNS)
            else:
                header = {
                    "type": "header",
                    "format": "phiseal-audit-export",
                    "version": 1,
                    "workspace_id": flt.workspace_id,
                    "complete_chain": flt.whole_chain,
                    "filters": flt.used(),
                    "exported_at": chain.format_time(self._clock()),
                    "holds_checkpoints_signed_before": chain.format_time(checkpoints_before),
                }
                alarm = self.checkpoints.alarms.get(flt.workspace_id)
                if alarm is not None:
                    header["unverified"] = {
                        "kind": alarm.kind.value,
                        "sequence": alarm.sequence,
                        "reason": alarm.reason,
                    }
                buf.write(_line(header))
                # The configured verification keys (never the database's copy of them).
                for kid, trusted in sorted(self.checkpoints.trusted.items()):
                    key = {"type": "public_key", "algorithm": "Ed25519", "key_id": kid}
                    buf.write(_line({**key, "pem": chain.public_key_pem(trusted.public_key)}))
            last = 0
            async for rec in snap.records:
                last = rec.sequence
                if fmt is ExportFormat.CSV:
                    row = rec.to_json()
                    row["details"] = chain.canonical_json(row["details"]).decode()
                    writer.writerow([row[c] for c in CSV_COLUMNS])
                else:
                    buf.write(_line({"type": "record", **rec.to_json()}))
                if buf.tell() >= self._chunk:
                    yield buf.getvalue().encode()
                    buf.seek(0)
                    buf.truncate()
            if fmt is ExportFormat.JSONL:
                for cp in await snap.checkpoints(last):
                    buf.write(_line({"type": "checkpoint", **cp.to_json()}))
        if buf.tell():
            yield buf.getvalue().encode()

    async def verify(
        self, caller: Caller, workspace_id: str, first: int, last: int
    ) -> chain.Verdict:
        if not workspace_id.strip():
            raise InvalidArgument("workspace_id is required")
        check_text(workspace_id, "workspace_id")
        require(caller.principal, workspace_id, Role.AUDITOR)
        if last and first > last:
            raise InvalidArgument("from_sequence must not be after to_sequence")
        if max(first, last) > _MAX_SEQUENCE:
            # Sequences are PostgreSQL bigint: a larger uint64 cannot name a record.
            raise InvalidArgument(f"from_sequence and to_sequence must be at most {_MAX_SEQUENCE}")
        to_head = last == 0
        # Under the signing lock, so a checkpoint journaled but not yet committed is not
        # mistaken for one deleted from the database.
        async with self.checkpoints.lock:
            journaled = await self.checkpoints.journal_checkpoints(workspace_id)
            inputs = await self._store.verify_inputs(workspace_id, first, last)
        trusted = self.checkpoints.trusted
        verdict = chain.verify(
            inputs.records, inputs.checkpoints, trusted, anchor=inputs.anchor, to_head=to_head
        )
        if verdict.problem is not None:
            return verdict
        in_range = [
            cp for cp in journaled if cp.sequence >= first and (to_head or cp.sequence <= last)
        ]
        finding = chain.check_checkpoint_chain(
            inputs.checkpoints, trusted
        ) or chain.compare_journal(in_range, inputs.checkpoints, up_to_number=None)
        if finding is None and to_head:
            finding = self._head_problem(workspace_id, inputs)
        if finding is None:
            return verdict
        return replace(verdict, problem=finding)

    def _head_problem(self, workspace_id: str, inputs: VerifyInputs) -> chain.Finding | None:
        """A chain that verifies but ends before where it should: its tail was deleted."""
        last = inputs.records[-1].sequence if inputs.records else inputs.anchor.sequence
        expected = [("the chain head", inputs.head)]
        expected.append(
            ("this service's last append", self.checkpoints.remembered_head(workspace_id))
        )
        for what, head in expected:
            if head is not None and head[0] > last:
                return chain.Finding(
                    chain.Problem.REMOVED,
                    last + 1,
                    "",
                    f"{what} is at sequence {head[0]} but the records end at {last}",
                )
        return self.checkpoints.alarms.get(workspace_id)

    async def record_denial(
        self, caller: Caller, method: str, workspace_id: str, reason: str
    ) -> None:
        """A refused read of the log, appended to the log itself (auditsvc has no outbox)."""
        if not workspace_id.strip():
            return  # nothing to chain it to; the interceptor's access_denied log line remains
        denied = Event(
            event_id=str(uuid.uuid4()),
            workspace_id=workspace_id,
            actor_user_id=caller.actor_id,
            event_type="Access Denied",
            timestamp=self._clock(),
            outcome="denied",
            target=method.lstrip("/"),
            request_id=caller.request_id,
            service=SERVICE,
            details={"method": method.rsplit("/", 1)[-1], "reason": reason},
        ).validated()
        await self._append([denied])

    async def checkpoint(self, workspace_id: str | None = None) -> int:
        """Signs the verified head of every chain (or one); see services.auditsvc.checkpointer."""
        return await self.checkpoints.run(workspace_id)


def _line(value: Mapping[str, Any]) -> str:
    return chain.canonical_json(value).decode() + "\n"
