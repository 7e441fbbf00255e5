"""auditsvc transport: proto → domain → proto. No SQL, no domain try/except."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from typing_extensions import override

from services.auditsvc import chain
from services.auditsvc.audit_log import AuditLog, Event, ExportFormat, Filter, Refused
from services.common.errors import InvalidArgument
from services.common.security.auth import current_caller
from services.common.server.interceptor import Context
from services.common.server.protoconv import from_timestamp, to_timestamp

_OUTCOME_TO_TEXT = {
    audit_pb2.OUTCOME_SUCCEEDED: "succeeded",
    audit_pb2.OUTCOME_FAILED: "failed",
    audit_pb2.OUTCOME_DENIED: "denied",
}
_TEXT_TO_OUTCOME = {v: k for k, v in _OUTCOME_TO_TEXT.items()}
_PROBLEM = {
    chain.Problem.EDITED: audit_pb2.PROBLEM_KIND_EDITED,
    chain.Problem.REMOVED: audit_pb2.PROBLEM_KIND_REMOVED,
    chain.Problem.INSERTED: audit_pb2.PROBLEM_KIND_INSERTED,
    chain.Problem.REORDERED: audit_pb2.PROBLEM_KIND_REORDERED,
    chain.Problem.CHECKPOINT_MISMATCH: audit_pb2.PROBLEM_KIND_CHECKPOINT_MISMATCH,
    chain.Problem.CHECKPOINT_MISSING: audit_pb2.PROBLEM_KIND_CHECKPOINT_MISSING,
}
_FORMATS = {
    audit_pb2.EXPORT_FORMAT_UNSPECIFIED: ExportFormat.JSONL,
    audit_pb2.EXPORT_FORMAT_JSONL: ExportFormat.JSONL,
    audit_pb2.EXPORT_FORMAT_CSV: ExportFormat.CSV,
}
# Far outside any real event; also keeps datetime conversion from overflowing.
_MIN_TIME = datetime(1970, 1, 2, tzinfo=UTC)


def _time(ts: timestamp_pb2.Timestamp, what: str) -> datetime:
    try:
        value = from_timestamp(ts)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{what} is out of range") from None
    if value < _MIN_TIME:
        raise InvalidArgument(f"{what} must be after 1970-01-02 UTC")
    return value


def _event(msg: audit_pb2.AuditEvent) -> Event:
    if not msg.HasField("timestamp"):
        raise InvalidArgument(f"event {msg.event_id[:80]!r}: timestamp is required (UTC)")
    try:
        details: dict[str, Any] = json_format.MessageToDict(msg.details)
    except ValueError:
        # JSON has no NaN or Infinity, and a record must have one canonical form to hash.
        raise InvalidArgument(
            f"event {msg.event_id[:80]!r}: details hold a number that is not finite "
            "(NaN or Infinity); send finite numbers only"
        ) from None
    return Event(
        event_id=msg.event_id,
        workspace_id=msg.workspace_id,
        actor_user_id=msg.actor_user_id,
        event_type=msg.event_type,
        end_user_id=msg.end_user_id,
        timestamp=_time(msg.timestamp, f"event {msg.event_id[:80]!r}: timestamp"),
        outcome=_OUTCOME_TO_TEXT.get(msg.outcome, ""),
        target=msg.target,
        request_id=msg.request_id,
        service=msg.service,
        access_reason=msg.access_reason,
        details=details,
    )


def _events(msgs: Sequence[audit_pb2.AuditEvent]) -> list[Event | Refused]:
    """Each event read on its own: one that cannot be read is refused alone, in its place."""
    out: list[Event | Refused] = []
    for msg in msgs:
        try:
            out.append(_event(msg))
        except InvalidArgument as exc:
            out.append(Refused(msg.event_id, exc.message))
    return out


def _filter(msg: audit_pb2.AuditFilter) -> Filter:
    return Filter(
        workspace_id=msg.workspace_id,
        start_time=_time(msg.start_time, "filter.start_time")
        if msg.HasField("start_time")
        else None,
        end_time=_time(msg.end_time, "filter.end_time") if msg.HasField("end_time") else None,
        actor_user_id=msg.actor_user_id,
        event_type=msg.event_type,
        end_user_id=msg.end_user_id,
    )


def _record(rec: chain.ChainRecord) -> audit_pb2.AuditRecord:
    f = rec.fields
    details = struct_pb2.Struct()
    details.update(f["details"])
    event = audit_pb2.AuditEvent(
        event_id=f["event_id"],
        workspace_id=f["workspace_id"],
        actor_user_id=f["actor_user_id"],
        event_type=f["event_type"],
        end_user_id=f["end_user_id"],
        timestamp=to_timestamp(chain.parse_time(f["timestamp"])),
        outcome=_TEXT_TO_OUTCOME.get(f["outcome"], audit_pb2.OUTCOME_UNSPECIFIED),
        target=f["target"],
        request_id=f["request_id"],
        service=f["service"],
        access_reason=f["access_reason"],
        details=details,
    )
    return audit_pb2.AuditRecord(
        event=event,
        sequence=rec.sequence,
        prev_hash=rec.prev_hash,
        hash=rec.hash,
        recorded_at=to_timestamp(chain.parse_time(f["recorded_at"])),
    )


def _checkpoint(cp: chain.Checkpoint) -> audit_pb2.Checkpoint:
    return audit_pb2.Checkpoint(
        workspace_id=cp.workspace_id,
        sequence=cp.sequence,
        head_hash=cp.head_hash,
        signed_at=to_timestamp(chain.parse_time(cp.signed_at)),
        key_id=cp.key_id,
        signature=cp.signature,
        number=cp.number,
        prev_checkpoint_hash=cp.prev_checkpoint_hash,
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """phiseal.audit.v1.AuditService."""

    def __init__(self, audit_log: AuditLog) -> None:
        self._log = audit_log

    @override
    async def RecordEvents(
        self, request: audit_pb2.RecordEventsRequest, context: Context
    ) -> audit_pb2.RecordEventsResponse:
        result = await self._log.record(current_caller(), _events(request.events))
        return audit_pb2.RecordEventsResponse(
            recorded=result.recorded,
            duplicates=result.duplicates,
            rejected=[
                audit_pb2.RejectedEvent(index=r.index, event_id=r.event_id, reason=r.reason)
                for r in result.rejected
            ],
        )

    @override
    async def QueryEvents(
        self, request: audit_pb2.QueryEventsRequest, context: Context
    ) -> audit_pb2.QueryEventsResponse:
        records, token = await self._log.query(
            current_caller(),
            _filter(request.filter),
            request.page.page_size,
            request.page.page_token,
            request.access_reason,
        )
        return audit_pb2.QueryEventsResponse(
            records=[_record(r) for r in records], next_page_token=token
        )

    @override
    async def ExportEvents(
        self, request: audit_pb2.ExportEventsRequest, context: Context
    ) -> AsyncIterator[audit_pb2.ExportEventsResponse]:
        fmt = _FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument("format must be EXPORT_FORMAT_JSONL or EXPORT_FORMAT_CSV")
        chunks = await self._log.export(
            current_caller(), _filter(request.filter), fmt, request.access_reason
        )
        async for chunk in chunks:
            yield audit_pb2.ExportEventsResponse(chunk=chunk)

    @override
    async def VerifyChain(
        self, request: audit_pb2.VerifyChainRequest, context: Context
    ) -> audit_pb2.VerifyChainResponse:
        verdict = await self._log.verify(
            current_caller(), request.workspace_id, request.from_sequence, request.to_sequence
        )
        response = audit_pb2.VerifyChainResponse(
            ok=verdict.ok,
            records_checked=verdict.records_checked,
            checkpoints_checked=verdict.checkpoints_checked,
        )
        if verdict.problem is not None:
            p = verdict.problem
            response.first_problem.CopyFrom(
                audit_pb2.ChainProblem(
                    kind=_PROBLEM[p.kind], sequence=p.sequence, event_id=p.event_id, reason=p.reason
                )
            )
        if verdict.latest_checkpoint is not None:
            response.latest_checkpoint.CopyFrom(_checkpoint(verdict.latest_checkpoint))
        return response
