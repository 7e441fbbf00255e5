"""QueryEvents filters and pages; ExportEvents as JSON lines and CSV; both are audited."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from phiseal.common.v1 import common_pb2

from phiseal_dev.testing import RunningService
from services.auditsvc import cli
from services.auditsvc.app import AuditServer
from services.auditsvc.audit_log import CSV_COLUMNS, AuditLog, ExportFormat, Filter
from services.common.errors import PermissionDenied
from services.common.security.auth import Caller, Principal, Role
from tests.auditsvc.helpers import BASE_TIME, PERSON_MD, event, record, ts

WS = "ws_q"


async def _seed(audit: audit_pb2_grpc.AuditServiceStub) -> dict[str, str]:
    """Six events (minutes 0..5) with distinct actors, types and end users; name -> event_id."""
    events = {
        "a0": event(WS, n=0, actor="alice"),
        "a1": event(WS, n=1, actor="alice", end_user="user_1", event_type="Source Debugger Viewed"),
        "b2": event(WS, n=2, actor="bob", end_user="user_1"),
        "b3": event(WS, n=3, actor="bob", event_type="Source Debugger Viewed"),
        "a4": event(WS, n=4, actor="alice", end_user="user_2"),
        "other": event("ws_other", n=5, actor="alice"),
    }
    await record(audit, list(events.values()))
    return {name: e.event_id for name, e in events.items()}


async def _query(
    audit: audit_pb2_grpc.AuditServiceStub,
    page_size: int = 0,
    token: str = "",
    **flt: Any,
) -> audit_pb2.QueryEventsResponse:
    response: audit_pb2.QueryEventsResponse = await audit.QueryEvents(
        audit_pb2.QueryEventsRequest(
            filter=audit_pb2.AuditFilter(workspace_id=WS, **flt),
            page=common_pb2.PageRequest(page_size=page_size, page_token=token),
            access_reason="quarterly review",
        ),
        metadata=PERSON_MD,
    )
    return response


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"actor_user_id": "bob"}, ["b2", "b3"]),
        ({"event_type": "Source Debugger Viewed"}, ["a1", "b3"]),
        ({"end_user_id": "user_1"}, ["a1", "b2"]),
        ({"actor_user_id": "alice", "event_type": "Destination Encryption Enabled"}, ["a0", "a4"]),
        ({"start_time": 1, "end_time": 3}, ["a1", "b2"]),
        ({"start_time": 4}, ["a4"]),
    ],
)
async def test_filters_select_exactly_the_matching_records(
    audit: audit_pb2_grpc.AuditServiceStub, flt: dict[str, Any], expected: list[str]
) -> None:
    """Each filter returns exactly its records, in sequence order, from the one workspace."""
    ids = await _seed(audit)
    for bound in ("start_time", "end_time"):
        if bound in flt:
            flt[bound] = ts(BASE_TIME + timedelta(minutes=int(str(flt[bound]))))
    if "start_time" in flt and "end_time" not in flt:
        flt["end_time"] = ts(BASE_TIME + timedelta(minutes=5))  # leave out 'Viewed' records
    response = await _query(audit, **flt)
    assert [r.event.event_id for r in response.records] == [ids[n] for n in expected]
    assert response.next_page_token == ""


async def test_pages_survive_records_arriving_between_them(
    audit: audit_pb2_grpc.AuditServiceStub,
) -> None:
    """Paging by sequence neither skips nor repeats when new records arrive mid-way."""
    first = [event(WS, n=i, actor="carol") for i in range(5)]
    await record(audit, first)
    seen: list[str] = []
    page = await _query(audit, page_size=2, actor_user_id="carol")
    seen += [r.event.event_id for r in page.records]
    later = [event(WS, n=10 + i, actor="carol") for i in range(3)]
    await record(audit, later)
    while page.next_page_token:
        page = await _query(audit, page_size=2, token=page.next_page_token, actor_user_id="carol")
        seen += [r.event.event_id for r in page.records]
    assert seen == [e.event_id for e in first + later]


async def test_queries_are_audited(audit: audit_pb2_grpc.AuditServiceStub) -> None:
    """Each query appends an 'Audit Log Viewed' record naming the caller and the reason."""
    await _seed(audit)
    await _query(audit, actor_user_id="bob")
    viewed = await _query(audit, event_type="Audit Log Viewed")
    r = viewed.records[0].event
    assert len(viewed.records) == 1
    assert (r.actor_user_id, r.access_reason, r.service, json_format.MessageToDict(r.details)) == (
        "auditor@example.com",
        "quarterly review",
        "auditsvc",
        {"filters": ["actor_user_id"]},
    )


@pytest.mark.parametrize(
    ("page_size", "token", "flt", "fragment"),
    [
        (501, "", {}, "page_size"),
        (0, "!!!", {}, "page_token is malformed"),
        (0, "", {"workspace_id": ""}, "workspace_id is required"),
        (0, "", {"workspace_id": "w" * 600}, "filter.workspace_id must be printable"),
        (0, "", {"actor_user_id": "a\tb"}, "filter.actor_user_id must be printable"),
        (0, "", {"event_type": "E" * 600}, "filter.event_type must be printable"),
        (0, "", {"end_user_id": "u" * 600}, "filter.end_user_id must be printable"),
    ],
)
async def test_bad_queries_are_refused(
    audit: audit_pb2_grpc.AuditServiceStub,
    page_size: int,
    token: str,
    flt: dict[str, Any],
    fragment: str,
) -> None:
    """A bad page size, token, missing workspace or unstorable filter text gets
    INVALID_ARGUMENT naming the field (not the 'Viewed' record it would have failed in)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await audit.QueryEvents(
            audit_pb2.QueryEventsRequest(
                filter=audit_pb2.AuditFilter(**{"workspace_id": WS, **flt}),
                page=common_pb2.PageRequest(page_size=page_size, page_token=token),
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (info.value.details() or "")


async def test_unstorable_reader_text_is_refused_under_its_own_name(
    audit: audit_pb2_grpc.AuditServiceStub,
) -> None:
    """An over-long access_reason or workspace_id on QueryEvents, ExportEvents and VerifyChain
    is INVALID_ARGUMENT naming the request's field."""
    long = "x" * 600
    calls: dict[str, Any] = {
        "access_reason": audit.QueryEvents(
            audit_pb2.QueryEventsRequest(
                filter=audit_pb2.AuditFilter(workspace_id=WS), access_reason=long
            )
        ),
        "filter.workspace_id": audit.ExportEvents(
            audit_pb2.ExportEventsRequest(
                filter=audit_pb2.AuditFilter(workspace_id=long),
                format=audit_pb2.EXPORT_FORMAT_JSONL,
            )
        ),
        "workspace_id": audit.VerifyChain(audit_pb2.VerifyChainRequest(workspace_id=long)),
    }
    found = {}
    for field, call in calls.items():
        try:
            if hasattr(call, "__aiter__"):
                async for _ in call:
                    pass
            else:
                await call
            found[field] = "OK"
        except grpc.aio.AioRpcError as exc:
            found[field] = f"{exc.code().name}: {exc.details()}"
    expected = "INVALID_ARGUMENT: {} must be printable text of at most 512 characters"
    assert found == {field: expected.format(field) for field in calls}


async def test_a_token_for_another_filter_is_refused(
    audit: audit_pb2_grpc.AuditServiceStub,
) -> None:
    """A page token only continues the query it came from."""
    await _seed(audit)
    page = await _query(audit, page_size=1, actor_user_id="alice")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _query(audit, page_size=1, token=page.next_page_token, actor_user_id="bob")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _export(audit: audit_pb2_grpc.AuditServiceStub, fmt: Any, **flt: Any) -> bytes:
    chunks = audit.ExportEvents(
        audit_pb2.ExportEventsRequest(
            filter=audit_pb2.AuditFilter(workspace_id=WS, **flt),
            format=fmt,
            access_reason="subpoena 42",
        ),
        metadata=PERSON_MD,
    )
    return b"".join([c.chunk async for c in chunks])


async def test_jsonl_export_round_trips_through_the_offline_verifier(
    audit: audit_pb2_grpc.AuditServiceStub, tmp_path: Path
) -> None:
    """A JSON-lines export verifies offline, with its checkpoint and public key inside."""
    await _seed(audit)
    path = tmp_path / "export.jsonl"
    path.write_bytes(await _export(audit, audit_pb2.EXPORT_FORMAT_JSONL))
    types = [json.loads(line)["type"] for line in path.read_text().splitlines()]
    verdict, _ = cli.verify_file(path, None)
    assert (verdict.ok, verdict.records_checked, verdict.checkpoints_checked) == (True, 6, 1)
    assert types == ["header", "public_key"] + ["record"] * 6 + ["checkpoint"]


async def test_offline_verifier_names_a_line_swap(
    audit: audit_pb2_grpc.AuditServiceStub, tmp_path: Path
) -> None:
    """Swapping two record lines of an export is reported as REORDERED."""
    await _seed(audit)
    lines = (await _export(audit, audit_pb2.EXPORT_FORMAT_JSONL)).decode().splitlines()
    lines[3], lines[4] = lines[4], lines[3]  # records 2 and 3
    path = tmp_path / "swapped.jsonl"
    path.write_text("\n".join(lines) + "\n")
    verdict, _ = cli.verify_file(path, None)
    assert verdict.problem is not None
    assert (verdict.problem.kind.value, verdict.problem.sequence) == ("REORDERED", 3)


async def test_filtered_export_checks_each_record(
    audit: audit_pb2_grpc.AuditServiceStub, tmp_path: Path
) -> None:
    """A filtered export is not a contiguous chain but its records still verify."""
    await _seed(audit)
    path = tmp_path / "bob.jsonl"
    path.write_bytes(await _export(audit, audit_pb2.EXPORT_FORMAT_JSONL, actor_user_id="bob"))
    verdict, notes = cli.verify_file(path, None)
    assert (verdict.ok, verdict.records_checked) == (True, 2)
    assert any("filtered export" in n for n in notes)


async def test_csv_export_parses_back(audit: audit_pb2_grpc.AuditServiceStub) -> None:
    """The CSV export has a header row and quotes commas and quotes correctly."""
    tricky = event(WS, n=7)
    tricky.target = 'destination/"a, b"'
    await record(audit, [tricky])
    rows = list(csv.DictReader(io.StringIO((await _export(audit, 2)).decode())))
    assert list(rows[0]) == CSV_COLUMNS
    assert (rows[0]["target"], rows[0]["event_id"], rows[0]["sequence"]) == (
        'destination/"a, b"',
        tricky.event_id,
        "1",
    )
    assert json.loads(rows[0]["details"]) == {"fields": ["traits.email"], "version": 7}
    assert [r["event_type"] for r in rows] == [
        "Destination Encryption Enabled",
        "Audit Log Exported",
    ]


async def test_exports_are_audited(audit: audit_pb2_grpc.AuditServiceStub) -> None:
    """Each export appends an 'Audit Log Exported' record with the format and reason."""
    await _export(audit, audit_pb2.EXPORT_FORMAT_CSV)
    page = await _query(audit, event_type="Audit Log Exported")
    r = page.records[0].event
    assert (len(page.records), r.access_reason, json_format.MessageToDict(r.details)["format"]) == (
        1,
        "subpoena 42",
        "csv",
    )


async def test_reading_needs_auditor_or_admin_in_the_workspace() -> None:
    """A person who is only a viewer of the workspace may not query, export or verify."""
    viewer = Caller(Principal(subject="vic", memberships={WS: frozenset({Role.VIEWER})}), "r1")
    log = AuditLog(
        store=None,  # type: ignore[arg-type]
        signing_key=Ed25519PrivateKey.generate(),
        trusted={},
        journal=None,  # type: ignore[arg-type]
    )
    with pytest.raises(PermissionDenied, match="auditor or admin"):
        await log.query(viewer, Filter(WS), 0, "", "")
    with pytest.raises(PermissionDenied, match="auditor or admin"):
        await log.export(viewer, Filter(WS), ExportFormat.JSONL, "")
    with pytest.raises(PermissionDenied, match="auditor or admin"):
        await log.verify(viewer, WS, 0, 0)


async def test_denied_reads_are_recorded_in_the_log(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService
) -> None:
    """auditsvc's denial auditor appends 'Access Denied' (outcome denied) to the log itself."""
    assert isinstance(auditsvc.server, AuditServer)
    viewer = Caller(Principal(subject="vic", memberships={WS: frozenset({Role.VIEWER})}), "r2")
    await auditsvc.server.audit_log.record_denial(
        viewer, "/phiseal.audit.v1.AuditService/QueryEvents", WS, "needs auditor"
    )
    page = await _query(audit, event_type="Access Denied")
    r = page.records[0].event
    assert (len(page.records), r.actor_user_id, r.outcome) == (
        1,
        "vic",
        audit_pb2.OUTCOME_DENIED,
    )
