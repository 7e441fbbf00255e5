"""Workspaces and destinations through the gRPC API: creation, HIPAA eligibility, listing."""

from __future__ import annotations

import asyncpg
import grpc
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from tests.policysvc.conftest import (
    CLOUD,
    PERSON,
    error_of,
    event_types,
    new_destination,
    new_workspace,
    outbox,
    status_of,
)


async def test_create_workspace_returns_prefixed_id_and_is_readable(
    stub: PolicyServiceStub,
) -> None:
    """A created workspace has a ws_ id, is not HIPAA eligible, and GetWorkspace returns it."""
    created = await stub.CreateWorkspace(
        policy_pb2.CreateWorkspaceRequest(name="North Clinic"), metadata=PERSON
    )
    fetched = await stub.GetWorkspace(
        policy_pb2.GetWorkspaceRequest(workspace_id=created.workspace.workspace_id)
    )
    assert created.workspace.workspace_id.startswith("ws_")
    assert len(created.workspace.workspace_id) == 23
    assert (fetched.workspace.name, fetched.workspace.created_by) == ("North Clinic", "user-1")
    assert fetched.workspace.hipaa.eligible is False


async def test_create_workspace_writes_audit_row(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """CreateWorkspace writes `Workspace Created` with the actor and workspace."""
    created = await stub.CreateWorkspace(
        policy_pb2.CreateWorkspaceRequest(name="North Clinic"), metadata=PERSON
    )
    [event] = await outbox(database_url)
    workspace_id = created.workspace.workspace_id
    assert (event["event_type"], event["workspace_id"], event["actor_user_id"]) == (
        "Workspace Created",
        workspace_id,
        "user-1",
    )


async def test_create_workspace_without_name_is_invalid(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """A workspace needs a name; nothing is written when it is refused."""
    code = await status_of(stub.CreateWorkspace(policy_pb2.CreateWorkspaceRequest(name="  ")))
    assert (code, await outbox(database_url)) == (grpc.StatusCode.INVALID_ARGUMENT, [])


async def test_get_unknown_workspace_is_not_found(stub: PolicyServiceStub) -> None:
    """GetWorkspace of an id that does not exist answers NOT_FOUND."""
    code = await status_of(
        stub.GetWorkspace(policy_pb2.GetWorkspaceRequest(workspace_id="ws_00000000000000000000"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_get_workspace_without_id_is_invalid(stub: PolicyServiceStub) -> None:
    """GetWorkspace with an empty id answers INVALID_ARGUMENT."""
    code = await status_of(stub.GetWorkspace(policy_pb2.GetWorkspaceRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_blank_or_spaced_ids_are_invalid_not_unknown(stub: PolicyServiceStub) -> None:
    """An id of spaces is "required", an id with a space in it is no id of ours: both
    INVALID_ARGUMENT saying so, not a NOT_FOUND quoting the blanks back."""
    workspace_id = await new_workspace(stub)
    answers = [
        await error_of(stub.GetWorkspace(policy_pb2.GetWorkspaceRequest(workspace_id="  "))),
        await error_of(
            stub.GetWorkspace(policy_pb2.GetWorkspaceRequest(workspace_id=f" {workspace_id}"))
        ),
        await error_of(stub.GetPolicy(policy_pb2.GetPolicyRequest(destination_id="\t"))),
    ]
    assert [(code, message.split(":")[0]) for code, message in answers] == [
        (grpc.StatusCode.INVALID_ARGUMENT, "workspace_id is required"),
        (grpc.StatusCode.INVALID_ARGUMENT, "workspace_id is not a valid id"),
        (grpc.StatusCode.INVALID_ARGUMENT, "destination_id is required"),
    ]


async def test_hipaa_eligibility_records_reference_who_and_when(stub: PolicyServiceStub) -> None:
    """SetHipaaEligibility stores the BAA reference, the actor and a timestamp."""
    workspace_id = await new_workspace(stub, eligible=False)
    reply = await stub.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(
            workspace_id=workspace_id, eligible=True, baa_reference="BAA-7"
        ),
        metadata=PERSON,
    )
    fetched = await stub.GetWorkspace(policy_pb2.GetWorkspaceRequest(workspace_id=workspace_id))
    hipaa = fetched.workspace.hipaa
    assert (hipaa.eligible, hipaa.baa_reference, hipaa.set_by) == (True, "BAA-7", "user-1")
    assert hipaa.HasField("set_at")
    assert reply.workspace.hipaa == hipaa


async def test_hipaa_eligibility_requires_baa_reference(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """Marking a workspace eligible without a BAA reference is INVALID_ARGUMENT, unaudited."""
    workspace_id = await new_workspace(stub, eligible=False)
    code, message = await error_of(
        stub.SetHipaaEligibility(
            policy_pb2.SetHipaaEligibilityRequest(workspace_id=workspace_id, eligible=True)
        )
    )
    assert (code, "baa_reference" in message) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    assert await event_types(database_url) == ["Workspace Created"]


async def test_hipaa_eligibility_change_is_audited(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """SetHipaaEligibility writes `Workspace HIPAA Eligibility Modified` with the new state."""
    workspace_id = await new_workspace(stub, eligible=True)
    events = await outbox(database_url)
    assert [e["event_type"] for e in events] == [
        "Workspace Created",
        "Workspace HIPAA Eligibility Modified",
    ]
    assert events[1]["details"] == {
        "eligible": True,
        "previously_eligible": False,
        "baa_reference": "BAA-2026-001",
    }
    assert events[1]["target"] == workspace_id


async def test_hipaa_eligibility_of_unknown_workspace_is_not_found(
    stub: PolicyServiceStub,
) -> None:
    """SetHipaaEligibility on a missing workspace answers NOT_FOUND."""
    code = await status_of(
        stub.SetHipaaEligibility(
            policy_pb2.SetHipaaEligibilityRequest(
                workspace_id="ws_00000000000000000000", eligible=False
            )
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_create_destination_is_readable_and_dot_free(stub: PolicyServiceStub) -> None:
    """A destination gets a dst_ id without dots; GetDestination returns what was created."""
    workspace_id = await new_workspace(stub)
    created = await stub.CreateDestination(
        policy_pb2.CreateDestinationRequest(workspace_id=workspace_id, name="Webhook", type=CLOUD),
        metadata=PERSON,
    )
    destination_id = created.destination.destination_id
    fetched = await stub.GetDestination(
        policy_pb2.GetDestinationRequest(destination_id=destination_id)
    )
    assert destination_id.startswith("dst_")
    assert "." not in destination_id
    assert fetched.destination == created.destination
    assert (fetched.destination.workspace_id, fetched.destination.type) == (workspace_id, CLOUD)


async def test_create_destination_is_audited(stub: PolicyServiceStub, database_url: str) -> None:
    """CreateDestination writes `Destination Created` naming the destination and its type."""
    workspace_id = await new_workspace(stub, eligible=False)
    destination_id = await new_destination(stub, workspace_id)
    event = (await outbox(database_url))[-1]
    assert (event["event_type"], event["target"], event["details"]) == (
        "Destination Created",
        destination_id,
        {"name": "Webhook", "type": "event_stream_cloud_mode"},
    )


async def test_create_destination_requires_a_name(stub: PolicyServiceStub) -> None:
    """A destination without a name is INVALID_ARGUMENT."""
    workspace_id = await new_workspace(stub)
    code = await status_of(
        stub.CreateDestination(
            policy_pb2.CreateDestinationRequest(workspace_id=workspace_id, type=CLOUD)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_destination_requires_a_type(stub: PolicyServiceStub) -> None:
    """A destination without a type is INVALID_ARGUMENT and the message lists the types."""
    workspace_id = await new_workspace(stub)
    code, message = await error_of(
        stub.CreateDestination(
            policy_pb2.CreateDestinationRequest(workspace_id=workspace_id, name="Webhook")
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE" in message


async def test_create_destination_refuses_unknown_type(stub: PolicyServiceStub) -> None:
    """An enum number the contract does not know is INVALID_ARGUMENT."""
    workspace_id = await new_workspace(stub)
    code = await status_of(
        stub.CreateDestination(
            policy_pb2.CreateDestinationRequest(
                workspace_id=workspace_id,
                name="Webhook",
                type=99,  # type: ignore[arg-type]
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_destination_in_unknown_workspace_is_not_found(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """A destination cannot be created in a workspace that does not exist; nothing is audited."""
    code = await status_of(
        stub.CreateDestination(
            policy_pb2.CreateDestinationRequest(
                workspace_id="ws_00000000000000000000", name="Webhook", type=CLOUD
            )
        )
    )
    assert (code, await outbox(database_url)) == (grpc.StatusCode.NOT_FOUND, [])


async def test_duplicate_destination_name_already_exists(stub: PolicyServiceStub) -> None:
    """Two destinations of one workspace cannot share a name."""
    workspace_id = await new_workspace(stub)
    await new_destination(stub, workspace_id, name="Webhook")
    code = await status_of(
        stub.CreateDestination(
            policy_pb2.CreateDestinationRequest(
                workspace_id=workspace_id, name="Webhook", type=CLOUD
            )
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS


async def test_get_unknown_destination_is_not_found(stub: PolicyServiceStub) -> None:
    """GetDestination of an id that does not exist answers NOT_FOUND."""
    code = await status_of(
        stub.GetDestination(
            policy_pb2.GetDestinationRequest(destination_id="dst_00000000000000000000")
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_destination_ids_with_dots_are_refused_by_the_database(database_url: str) -> None:
    """The schema itself refuses a destination id holding a dot (kid = <id>.v<version>)."""
    con = await asyncpg.connect(database_url)
    try:
        await con.execute(
            "INSERT INTO policysvc.workspaces (workspace_id, name, created_at, created_by) "
            "VALUES ('ws_x', 'x', now(), 'test')"
        )
        refused = False
        try:
            await con.execute(
                "INSERT INTO policysvc.destinations "
                "(destination_id, workspace_id, name, type, created_at, created_by) "
                "VALUES ('dst_a.b', 'ws_x', 'x', 'warehouse', now(), 'test')"
            )
        except asyncpg.CheckViolationError:
            refused = True
    finally:
        await con.close()
    assert refused


async def list_all(stub: PolicyServiceStub, workspace_id: str, page_size: int) -> list[list[str]]:
    """Every page of ListDestinations, as lists of names."""
    pages: list[list[str]] = []
    token = ""
    while True:
        reply = await stub.ListDestinations(
            policy_pb2.ListDestinationsRequest(
                workspace_id=workspace_id,
                page=common_pb2.PageRequest(page_size=page_size, page_token=token),
            )
        )
        pages.append([d.name for d in reply.destinations])
        token = reply.next_page_token
        if not token:
            return pages


async def test_list_destinations_pages_in_creation_order(stub: PolicyServiceStub) -> None:
    """Pages of two hold every destination once, in creation order, and the last has no token."""
    workspace_id = await new_workspace(stub)
    for name in ("a", "b", "c", "d", "e"):
        await new_destination(stub, workspace_id, name=name)
    assert await list_all(stub, workspace_id, 2) == [["a", "b"], ["c", "d"], ["e"]]


async def test_list_destinations_only_lists_the_workspace(stub: PolicyServiceStub) -> None:
    """Another workspace's destinations never appear; page_size 0 means the default."""
    mine = await new_workspace(stub)
    theirs = await new_workspace(stub, name="Other")
    await new_destination(stub, mine, name="mine")
    await new_destination(stub, theirs, name="theirs")
    assert await list_all(stub, mine, 0) == [["mine"]]


async def test_list_destinations_refuses_page_size_over_500(stub: PolicyServiceStub) -> None:
    """page_size above 500 is INVALID_ARGUMENT."""
    workspace_id = await new_workspace(stub)
    code = await status_of(
        stub.ListDestinations(
            policy_pb2.ListDestinationsRequest(
                workspace_id=workspace_id, page=common_pb2.PageRequest(page_size=501)
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_destinations_refuses_a_forged_token(stub: PolicyServiceStub) -> None:
    """A page token that is not ours is INVALID_ARGUMENT."""
    workspace_id = await new_workspace(stub)
    code = await status_of(
        stub.ListDestinations(
            policy_pb2.ListDestinationsRequest(
                workspace_id=workspace_id, page=common_pb2.PageRequest(page_token="bm9wZQ")
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_destinations_refuses_another_workspaces_token(
    stub: PolicyServiceStub,
) -> None:
    """A token from one workspace's listing does not page another's."""
    mine = await new_workspace(stub)
    theirs = await new_workspace(stub, name="Other")
    for name in ("a", "b"):
        await new_destination(stub, mine, name=name)
    first = await stub.ListDestinations(
        policy_pb2.ListDestinationsRequest(
            workspace_id=mine, page=common_pb2.PageRequest(page_size=1)
        )
    )
    code = await status_of(
        stub.ListDestinations(
            policy_pb2.ListDestinationsRequest(
                workspace_id=theirs,
                page=common_pb2.PageRequest(page_token=first.next_page_token),
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_destinations_of_unknown_workspace_is_not_found(
    stub: PolicyServiceStub,
) -> None:
    """Listing a workspace that does not exist answers NOT_FOUND."""
    code = await status_of(
        stub.ListDestinations(
            policy_pb2.ListDestinationsRequest(workspace_id="ws_00000000000000000000")
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
