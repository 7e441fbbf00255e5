"""RecordEvents: validation, idempotency, the chain it builds, who may call it."""

from __future__ import annotations

import grpc
import pytest
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from tests.auditsvc.helpers import PERSON_MD, event, record


async def test_records_a_batch(audit: audit_pb2_grpc.AuditServiceStub) -> None:
    """A batch of new events is recorded in full."""
    response = await record(audit, [event(n=i) for i in range(3)])
    assert (response.recorded, response.duplicates) == (3, 0)


async def test_duplicate_event_ids_are_counted_not_appended(
    audit: audit_pb2_grpc.AuditServiceStub,
) -> None:
    """Re-sending an event (and repeating one inside a batch) records it once."""
    first = event(n=1)
    await record(audit, [first])
    response = await record(audit, [first, event(n=2), first])
    page = await audit.QueryEvents(
        audit_pb2.QueryEventsRequest(
            filter=audit_pb2.AuditFilter(
                workspace_id="ws_1", event_type="Destination Encryption Enabled"
            )
        )
    )
    assert (response.recorded, response.duplicates) == (1, 2)
    assert len(page.records) == 2


async def test_people_may_not_record(audit: audit_pb2_grpc.AuditServiceStub) -> None:
    """A person calling RecordEvents gets PERMISSION_DENIED."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await audit.RecordEvents(
            audit_pb2.RecordEventsRequest(events=[event()]), metadata=PERSON_MD
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"event_id": "not-a-uuid"}, "is not a UUID"),
        ({"workspace_id": ""}, "workspace_id is required"),
        ({"actor_user_id": ""}, "actor_user_id is required"),
        ({"event_type": "destination created"}, "Title Case"),
        ({"event_type": "Destination Create"}, "past-tense"),
        ({"event_type": "Created"}, "past-tense"),
        ({"outcome": audit_pb2.OUTCOME_UNSPECIFIED}, "outcome is required"),
    ],
)
async def test_invalid_events_are_refused(
    audit: audit_pb2_grpc.AuditServiceStub, change: dict[str, object], fragment: str
) -> None:
    """Each malformed event is refused on its own, with a reason naming the problem."""
    bad = event()
    for name, value in change.items():
        setattr(bad, name, value)
    response = await record(audit, [bad])
    assert (response.recorded, [r.index for r in response.rejected]) == (0, [0])
    assert fragment in response.rejected[0].reason


async def test_missing_timestamp_is_refused(audit: audit_pb2_grpc.AuditServiceStub) -> None:
    """An event without a timestamp is refused, naming the timestamp."""
    bad = event()
    bad.ClearField("timestamp")
    response = await record(audit, [bad])
    assert [(r.index, r.event_id) for r in response.rejected] == [(0, bad.event_id)]
    assert "timestamp is required" in response.rejected[0].reason


async def test_non_finite_detail_numbers_are_refused(
    audit: audit_pb2_grpc.AuditServiceStub,
) -> None:
    """A details number JSON cannot carry (infinity) is refused, not INTERNAL."""
    bad = event()
    bad.details.update({"count": float("inf")})
    response = await record(audit, [bad])
    assert [r.index for r in response.rejected] == [0]
    assert "not finite" in response.rejected[0].reason


async def test_one_invalid_event_does_not_refuse_the_batch(
    audit: audit_pb2_grpc.AuditServiceStub,
) -> None:
    """Issue 13 item 5: the valid events of a batch are recorded; only the invalid one (a
    600-character workspace id, a non-printable target) is refused, each by its index."""
    long_ws = event("w" * 600, n=1)
    unprintable = event(n=2)
    unprintable.target = "classification/traits.\x01email"
    good = [event(n=0), event(n=3)]
    response = await record(audit, [good[0], long_ws, unprintable, good[1]])
    assert (response.recorded, [r.index for r in response.rejected]) == (2, [1, 2])
    assert [r.event_id for r in response.rejected] == [long_ws.event_id, unprintable.event_id]
    assert "workspace_id must be printable text" in response.rejected[0].reason


async def test_irregular_past_participles_are_accepted(
    audit: audit_pb2_grpc.AuditServiceStub,
) -> None:
    """'Private Key Sent' and 'Key Pair Made' are past tense too."""
    response = await record(
        audit, [event(event_type="Private Key Sent"), event(event_type="Key Pair Made")]
    )
    assert response.recorded == 2


async def test_chain_links_each_record_to_the_previous(
    audit: audit_pb2_grpc.AuditServiceStub,
) -> None:
    """Sequences count from 1 per workspace and each prev_hash is the previous hash."""
    await record(audit, [event(n=i) for i in range(3)] + [event("ws_2")])
    page = await audit.QueryEvents(
        audit_pb2.QueryEventsRequest(
            filter=audit_pb2.AuditFilter(
                workspace_id="ws_1", event_type="Destination Encryption Enabled"
            )
        )
    )
    assert [r.sequence for r in page.records] == [1, 2, 3]
    assert page.records[0].prev_hash == "0" * 64
    assert [r.hash for r in page.records[:2]] == [r.prev_hash for r in page.records[1:]]
