"""Calls that accept sample events (PHI) are audited, with the end user they concern."""

from __future__ import annotations

import json

from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from tests.policysvc.conftest import new_destination, new_workspace, outbox

SECRET = "jane.secret@example.com"


def sample(user: str, key: str = "userId") -> str:
    return json.dumps({key: user, "traits": {"email": SECRET}, "properties": {"x": 1}})


async def test_list_classifications_with_samples_is_audited(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """Samples of one end user: a record naming that end user, counting, quoting no value."""
    workspace_id = await new_workspace(stub)
    await stub.ListClassifications(
        policy_pb2.ListClassificationsRequest(
            workspace_id=workspace_id, sample_events=[sample("user-7"), sample("user-7")]
        )
    )
    records = [e for e in await outbox(database_url) if e["event_type"].startswith("Privacy")]
    assert [(e["event_type"], e["end_user_id"], e["details"]) for e in records] == [
        (
            "Privacy Sample Events Classified",
            "user-7",
            {"sample_count": 2, "end_user_count": 1, "path_count": 2},
        )
    ]
    assert SECRET not in json.dumps(records)


async def test_preview_is_audited_with_its_end_user(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """PreviewEncryption writes a record; an anonymous sample names its anonymousId."""
    workspace_id = await new_workspace(stub)
    destination_id = await new_destination(stub, workspace_id)
    await stub.PreviewEncryption(
        policy_pb2.PreviewEncryptionRequest(
            destination_id=destination_id,
            sample_events=[sample("anon-1", "anonymousId")],
            proposed_fields=["traits.email"],
            use_proposed_fields=True,
        )
    )
    records = [e for e in await outbox(database_url) if "Previewed" in e["event_type"]]
    assert [(e["target"], e["end_user_id"], e["details"]["end_user_count"]) for e in records] == [
        (destination_id, "anon-1", 1)
    ]
    assert SECRET not in json.dumps(records)


async def test_samples_of_several_end_users_name_none(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """A record about several end users leaves end_user_id empty and counts them."""
    workspace_id = await new_workspace(stub)
    await stub.ListClassifications(
        policy_pb2.ListClassificationsRequest(
            workspace_id=workspace_id, sample_events=[sample("user-1"), sample("user-2")]
        )
    )
    records = [e for e in await outbox(database_url) if e["event_type"].startswith("Privacy")]
    assert [(e["end_user_id"], e["details"]["end_user_count"]) for e in records] == [("", 2)]
