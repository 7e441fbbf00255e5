"""policysvc authorization in the domain: roles per workspace, audited denials, watches."""

from __future__ import annotations

import asyncio

import grpc
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_dev.testing import RunningService, session_secrets
from services.common.security.auth import Role
from tests.conftest import StartService
from tests.policysvc.conftest import new_destination, new_workspace, outbox, status_of

PolicyStub = policy_pb2_grpc.PolicyServiceStub


def as_person(service: RunningService, **roles: Role) -> PolicyStub:
    """A stub for alice holding ``roles`` ({workspace_id: role})."""
    token = session_secrets().token("alice", {ws: [role] for ws, role in roles.items()})
    return PolicyStub(service.channel(token=token))


async def test_a_viewer_reads_their_workspace_and_not_another(start: StartService) -> None:
    """A viewer of one workspace reads it; another workspace answers PERMISSION_DENIED."""
    service = await start("policysvc")
    admin = PolicyStub(service.channel())
    mine, theirs = await new_workspace(admin), await new_workspace(admin, name="Other")
    alice = as_person(service, **{mine: Role.VIEWER})
    codes = [
        await status_of(alice.GetWorkspace(policy_pb2.GetWorkspaceRequest(workspace_id=ws)))
        for ws in (mine, theirs)
    ]
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED]


async def test_an_editor_may_not_disable_encryption_and_the_attempt_is_audited(
    start: StartService, database_url: str
) -> None:
    """DisableEncryption needs admin: an editor is refused, and an Access Denied record names
    them, the workspace and the method."""
    service = await start("policysvc")
    admin = PolicyStub(service.channel())
    workspace_id = await new_workspace(admin)
    destination_id = await new_destination(admin, workspace_id)
    await admin.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(
            destination_id=destination_id, fields=["traits.email"], expected_version=0
        )
    )
    editor = as_person(service, **{workspace_id: Role.EDITOR})
    code = await status_of(
        editor.DisableEncryption(
            policy_pb2.DisableEncryptionRequest(destination_id=destination_id, expected_version=1)
        )
    )
    denied = [e for e in await outbox(database_url) if e["event_type"] == "Access Denied"]
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert [(e["actor_user_id"], e["workspace_id"], e["outcome"]) for e in denied] == [
        ("alice", workspace_id, "denied")
    ]
    assert denied[0]["details"]["method"] == "DisableEncryption"


async def test_a_policy_read_in_another_workspace_is_refused_and_not_recorded_as_viewed(
    start: StartService, database_url: str
) -> None:
    """GetPolicy on a destination of a workspace alice is not in: PERMISSION_DENIED and no
    'Policy Viewed' record."""
    service = await start("policysvc")
    admin = PolicyStub(service.channel())
    workspace_id = await new_workspace(admin)
    destination_id = await new_destination(admin, workspace_id)
    alice = as_person(service, ws_elsewhere=Role.ADMIN)
    code = await status_of(
        alice.GetPolicy(policy_pb2.GetPolicyRequest(destination_id=destination_id))
    )
    viewed = [e for e in await outbox(database_url) if e["event_type"].endswith("Viewed")]
    assert (code, viewed) == (grpc.StatusCode.PERMISSION_DENIED, [])


async def test_a_person_watches_named_destinations_of_their_workspaces_only(
    start: StartService,
) -> None:
    """WatchPolicies: a viewer without a filter is refused; naming their destination works."""
    service = await start("policysvc")
    admin = PolicyStub(service.channel())
    workspace_id = await new_workspace(admin)
    destination_id = await new_destination(admin, workspace_id)
    alice = as_person(service, **{workspace_id: Role.VIEWER})
    everything = alice.WatchPolicies(policy_pb2.WatchPoliciesRequest())
    try:
        async for _ in everything:
            break
        refused = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        refused = exc.code()
    mine = alice.WatchPolicies(policy_pb2.WatchPoliciesRequest(destination_ids=[destination_id]))
    async with asyncio.timeout(10):
        first = await anext(aiter(mine))
    mine.cancel()
    assert (refused, first.kind) == (
        grpc.StatusCode.PERMISSION_DENIED,
        common_pb2.CHANGE_KIND_RESYNC,
    )


async def test_the_credential_cases_get_their_codes_and_denials_are_audited(
    start: StartService, database_url: str
) -> None:
    """SetHipaaEligibility (admin, PHI) under session_secrets().tokens(): UNAUTHENTICATED for
    the first four, PERMISSION_DENIED (audited in the workspace) for the next two, OK last."""
    service = await start("policysvc")
    admin = PolicyStub(service.channel())
    workspace_id = await new_workspace(admin, eligible=False)
    request = policy_pb2.SetHipaaEligibilityRequest(
        workspace_id=workspace_id, eligible=True, baa_reference="BAA-1"
    )
    cases = session_secrets().tokens(workspace_id, Role.ADMIN).all()
    codes = {
        name: await status_of(PolicyStub(service.channel(token=token)).SetHipaaEligibility(request))
        for name, token in cases.items()
    }
    denied = [e for e in await outbox(database_url) if e["event_type"] == "Access Denied"]
    unauthenticated, denied_code = (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert list(codes.values()) == [unauthenticated] * 4 + [denied_code] * 2 + [grpc.StatusCode.OK]
    assert [(e["workspace_id"], e["actor_user_id"]) for e in denied] == [
        (workspace_id, "alice"),
        (workspace_id, "alice"),
    ]
