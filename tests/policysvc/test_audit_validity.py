"""Issue 13 item 5: an action whose audit entry auditsvc would refuse fails where it is made.

The entry is checked with auditsvc's own rules in the transaction of the change, so nothing
auditsvc refuses reaches the outbox (where it once stalled delivery for good).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from services.common.audit_rules import TEXT_FIELDS, check_record
from services.common.errors import InvalidArgument
from tests.conftest import StartService
from tests.policysvc.conftest import error_of, new_workspace, outbox

YELLOW = policy_pb2.CLASSIFICATION_YELLOW


def refused_by_auditsvc(event: dict[str, Any]) -> bool:
    try:
        check_record(
            event_id=str(event["event_id"]),
            event_type=str(event["event_type"]),
            outcome=str(event["outcome"]),
            timestamp=datetime.fromisoformat(str(event["timestamp"])),
            texts={name: str(event.get(name, "")) for name in TEXT_FIELDS},
            details=event["details"],
        )
    except InvalidArgument:
        return True
    return False


async def test_a_non_printable_classification_path_fails_the_action(
    start: StartService, database_url: str
) -> None:
    """An override of a path holding a non-printable character (a zero-width space) is
    INVALID_ARGUMENT, and its entry never enters the outbox."""
    stub = policy_pb2_grpc.PolicyServiceStub((await start("policysvc")).channel())
    workspace_id = await new_workspace(stub)
    before = len(await outbox(database_url))
    code, message = await error_of(
        stub.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=workspace_id,
                override=policy_pb2.PathOverride(
                    path='traits["a\\u200bb"]',
                    classification=YELLOW,
                ),
            )
        )
    )
    after = await outbox(database_url)
    assert (code, len(after)) == (grpc.StatusCode.INVALID_ARGUMENT, before)
    assert "printable" in message
    assert not [e for e in after if refused_by_auditsvc(e)]
