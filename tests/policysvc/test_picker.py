"""ListSelectableFields: the field picker's answer for one destination."""

from __future__ import annotations

import json

import grpc
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from tests.policysvc.conftest import new_destination, new_workspace, status_of

SAMPLE = json.dumps(
    {
        "userId": "user-1",
        "traits": {"email": "a@example.com", "password": "x", "plan": "gold"},
        "properties": {"page_name": "Home", "k": "E11.9"},
    }
)


async def pick(
    stub: PolicyServiceStub, destination_id: str, **fields: object
) -> policy_pb2.ListSelectableFieldsResponse:
    return await stub.ListSelectableFields(
        policy_pb2.ListSelectableFieldsRequest(
            destination_id=destination_id,
            page=common_pb2.PageRequest(page_size=100),
            **fields,  # type: ignore[arg-type]
        )
    )


async def test_picker_splits_selectable_from_the_rest_with_how_to_change(
    stub: PolicyServiceStub,
) -> None:
    """Yellow paths (also those seen only in samples or by value) are selectable; red and
    green ones come with their class, what decided it and how to change it."""
    workspace_id = await new_workspace(stub)
    destination_id = await new_destination(stub, workspace_id)
    reply = await pick(stub, destination_id, sample_events=[SAMPLE])
    others = {u.field.path: (u.field.classification, u.how_to_change) for u in reply.not_selectable}
    assert sorted(s.field.path for s in reply.selectable) == ["properties.k", "traits.email"]
    assert sorted(others) == ["properties.page_name", "traits.password", "traits.plan"]
    assert others["traits.password"][0] == policy_pb2.CLASSIFICATION_RED
    assert "SetClassification override {path: traits.plan" in others["traits.plan"][1]
    assert all(u.field.decided_by for u in reply.not_selectable)
    assert list(reply.destination_problems) == []


async def test_picker_marks_what_the_policy_encrypts(stub: PolicyServiceStub) -> None:
    """A selectable field the current policy encrypts is marked encrypted."""
    workspace_id = await new_workspace(stub)
    destination_id = await new_destination(stub, workspace_id)
    await stub.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(destination_id=destination_id, fields=["traits.email"])
    )
    reply = await pick(stub, destination_id, paths=["traits.phone"])
    assert {s.field.path: s.encrypted for s in reply.selectable} == {
        "traits.email": True,
        "traits.phone": False,
    }


async def test_picker_names_why_the_destination_cannot_encrypt(stub: PolicyServiceStub) -> None:
    """In a workspace that is not HIPAA eligible the answer says so and how to fix it."""
    workspace_id = await new_workspace(stub, eligible=False)
    destination_id = await new_destination(stub, workspace_id)
    reply = await pick(stub, destination_id, paths=["traits.email"])
    assert ["SetHipaaEligibility" in p for p in reply.destination_problems] == [True]


async def test_picker_of_unknown_destination_is_not_found(stub: PolicyServiceStub) -> None:
    """An unknown destination is NOT_FOUND."""
    code = await status_of(pick(stub, "ds_00000000000000000000"))
    assert code == grpc.StatusCode.NOT_FOUND
