"""The audit log domain: validation, appends, audited reads and exports, verification."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.auditsvc import chain
from services.common.data.paging import Page, encode_token
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.hostile_json import json_depth
from services.common.limits import check_count
from services.common.security.auth import Caller, Principal, PrincipalKind, Role
from services.common.security.authz import require
from services.common.server.metrics import UNCOUNTED, Incrementing

log = structlog.get_logger("auditsvc")

SERVICE = "auditsvc"
MAX_BATCH = 1000
MAX_TEXT = 512
# Details carry names and versions (a policy's field list at most), never payloads.
MAX_DETAILS_BYTES = 256 * 1024
MAX_DETAILS_DEPTH = 32
OUTCOMES = ("succeeded", "failed", "denied")

# Past participles that do not end in "ed". A closed list keeps the check decidable; add to
# it when a service needs a new verb.
IRREGULAR_PAST = frozenset(
    {
        "Begun",
        "Bound",
        "Brought",
        "Built",
        "Bought",
        "Caught",
        "Chosen",
        "Done",
        "Drawn",
        "Forgotten",
        "Found",
        "Frozen",
        "Given",
        "Got",
        "Gotten",
        "Held",
        "Hidden",
        "Kept",
        "Known",
        "Laid",
        "Led",
        "Left",
        "Lent",
        "Lost",
        "Made",
        "Meant",
        "Met",
        "Paid",
        "Put",
        "Read",
        "Rebuilt",
        "Redone",
        "Rerun",
        "Reset",
        "Rewritten",
        "Run",
        "Seen",
        "Sent",
        "Set",
        "Shown",
        "Shut",
        "Sold",
        "Spent",
        "Split",
        "Spun",
        "Taken",
        "Told",
        "Thrown",
        "Undone",
        "Withdrawn",
        "Won",
        "Written",
    }
)
_WORD = re.compile(r"[A-Z][A-Za-z0-9]*")


def check_event_type(event_type: str) -> None:
    """Title Case words, single spaces, the last a past participle ("Audit Log Viewed")."""
    words = event_type.split(" ")
    if not event_type or len(event_type) > 100:
        raise InvalidArgument("event_type is required and at most 100 characters")
    if any(not _WORD.fullmatch(w) for w in words):
        raise InvalidArgument(
            f"event_type {event_type!r} must be Title Case words separated by single spaces, "
            "e.g. 'Destination Encryption Enabled'"
        )
    last = words[-1]
    if len(words) < 2 or not (last.endswith("ed") or last in IRREGULAR_PAST):
        raise InvalidArgument(
            f"event_type {event_type!r} must name an object and end in a past-tense verb, "
            "e.g. 'Key Pair Generated' or 'Audit Log Viewed'"
        )


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
        """A normalized copy (canonical UUID, normalized details), or InvalidArgument."""
        try:
            event_id = str(uuid.UUID(self.event_id))
        except ValueError:
            raise InvalidArgument(f"event_id {self.event_id[:80]!r} is not a UUID") from None
        for name in ("workspace_id", "actor_user_id"):
            if not getattr(self, name).strip():
                raise InvalidArgument(f"event {event_id}: {name} is required")
        for name in (
            "workspace_id",
            "actor_user_id",
            "end_user_id",
            "target",
            "request_id",
            "service",
            "access_reason",
        ):
            value: str = getattr(self, name)
            if len(value) > MAX_TEXT or "\x00" in value or not value.isprintable():
                raise InvalidArgument(
                    f"event {event_id}: {name} must be printable text of at most "
                    f"{MAX_TEXT} characters"
                )
        check_event_type(self.event_type)
        if self.outcome not in OUTCOMES:
            raise InvalidArgument(
                f"event {event_id}: outcome is required (succeeded, failed or denied)"
            )
        if self.timestamp.tzinfo is None:
            raise InvalidArgument(f"event {event_id}: timestamp is required (UTC)")
        try:
            details = chain.normalize_details(dict(self.details))
        except ValueError as exc:
            raise InvalidArgument(f"event {event_id}: {exc}") from None
        if json_depth(details) > MAX_DETAILS_DEPTH:
            raise InvalidArgument(
                f"event {event_id}: details nest deeper than {MAX_DETAILS_DEPTH} levels"
            )
        if len(chain.canonical_json(details)) > MAX_DETAILS_BYTES:
            raise InvalidArgument(
                f"event {event_id}: details are larger than {MAX_DETAILS_BYTES} bytes as JSON; "
                "record names and versions, not payloads"
            )
        return Event(
            event_id=event_id,
            workspace_id=self.workspace_id,
            actor_user_id=self.actor_user_id,
            event_type=self.event_type,
            timestamp=self.timestamp.astimezone(UTC),
            outcome=self.outcome,
            end_user_id=self.end_user_id,
            target=self.target,
            request_id=self.request_id,
            service=self.service,
            access_reason=self.access_reason,
            details=details,
        )

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
class AppendResult:
    recorded: int
    duplicates: int


@dataclass(frozen=True)
class ExportSnapshot:
    """What an export reads in one consistent snapshot."""

    records: AsyncIterator[chain.ChainRecord]
    checkpoints: Callable[[int], Any]  # async (last_sequence) -> list[Checkpoint]
    public_keys: Mapping[str, str]  # key_id -> PEM


class AuditStore(Protocol):
    async def append(self, events: Sequence[Event], recorded_at: datetime) -> AppendResult: ...

    async def query_and_record(
        self, flt: Filter, after: int, limit: int, viewed: Event, recorded_at: datetime
    ) -> list[chain.ChainRecord]: ...

    def export(self, flt: Filter) -> Any:
        """An async context manager yielding an ExportSnapshot."""
        ...

    async def verify_inputs(
        self, workspace_id: str, first: int, last: int
    ) -> tuple[list[chain.ChainRecord], list[chain.Checkpoint], dict[str, str], chain.Anchor]: ...

    async def checkpoint_heads(
        self, sign: Callable[[str, int, str], chain.Checkpoint], workspace_id: str | None
    ) -> int: ...


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
    """What the log counts for its operators (services.common.server.metrics)."""

    records: Incrementing = UNCOUNTED  # records appended through RecordEvents
    duplicates: Incrementing = UNCOUNTED  # resent events already in the log (outbox retries)
    checkpoints: Incrementing = UNCOUNTED  # chain heads signed
    # A verification that found the chain broken, edited, reordered or cut: page someone.
    alarms: Incrementing = UNCOUNTED


class AuditLog:
    """Appends, audited reads and exports, verification and checkpoints."""

    def __init__(
        self,
        store: AuditStore,
        signing_key: Ed25519PrivateKey,
        *,
        clock: Callable[[], datetime] = utc_now,
        chunk_bytes: int = 64 * 1024,
        counts: AuditCounts = AuditCounts(),
    ) -> None:
        self._store = store
        self._counts = counts
        self._key = signing_key
        self._clock = clock
        self._chunk = chunk_bytes
        self.key_id = chain.key_id(signing_key.public_key())
        self.public_key_pem = chain.public_key_pem(signing_key.public_key())

    async def record(self, caller: Caller, events: Sequence[Event]) -> AppendResult:
        require_service(caller.principal)
        if not events:
            raise InvalidArgument("events is empty: send at least one event")
        check_count(len(events), MAX_BATCH, "events")
        result = await self._store.append([e.validated() for e in events], self._clock())
        self._counts.records.inc(result.recorded)
        self._counts.duplicates.inc(result.duplicates)
        return result

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
        rows = await self._store.query_and_record(
            flt, page.after, page.size + 1, viewed, self._clock()
        )
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
        await self._store.append([exported], self._clock())
        # A fresh checkpoint covers everything exported, so the export verifies to its end.
        await self.checkpoint(flt.workspace_id)
        return self._stream(flt, fmt)

    async def _stream(self, flt: Filter, fmt: ExportFormat) -> AsyncIterator[bytes]:
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
                }
                buf.write(_line(header))
                for kid, pem in sorted(snap.public_keys.items()):
                    key = {"type": "public_key", "algorithm": "Ed25519", "key_id": kid}
                    buf.write(_line({**key, "pem": pem}))
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
        records, checkpoints, pems, anchor = await self._store.verify_inputs(
            workspace_id, first, last
        )
        keys = {kid: chain.load_public_key_pem(pem) for kid, pem in pems.items()}
        verdict = chain.verify(records, checkpoints, keys, anchor=anchor, to_head=last == 0)
        if not verdict.ok:
            self._counts.alarms.inc()
            log.error("audit_chain_broken", workspace_id=workspace_id)
        return verdict

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
        await self._store.append([denied], self._clock())

    async def checkpoint(self, workspace_id: str | None = None) -> int:
        """Signs the head of every chain that grew since its last checkpoint."""

        def sign(ws: str, sequence: int, head_hash: str) -> chain.Checkpoint:
            return chain.sign_checkpoint(self._key, ws, sequence, head_hash, self._clock())

        signed = await self._store.checkpoint_heads(sign, workspace_id)
        self._counts.checkpoints.inc(signed)
        return signed

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()


def _line(value: Mapping[str, Any]) -> str:
    return chain.canonical_json(value).decode() + "\n"
