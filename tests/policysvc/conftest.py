"""policysvc fixtures: a served PolicyService stub, and helpers that build workspaces."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import orjson
import pytest
import pytest_asyncio
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_dev.testing import person
from tests.conftest import StartService

CLOUD = policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE
PERSON = person("user-1")


@pytest_asyncio.fixture
async def stub(start: StartService) -> policy_pb2_grpc.PolicyServiceStub:
    """A PolicyService stub against a policysvc served on a fresh database."""
    service = await start("policysvc")
    return policy_pb2_grpc.PolicyServiceStub(service.channel())


async def new_workspace(
    stub: policy_pb2_grpc.PolicyServiceStub, *, eligible: bool = True, name: str = "Clinic"
) -> str:
    """A workspace id, HIPAA eligible unless told otherwise."""
    reply = await stub.CreateWorkspace(policy_pb2.CreateWorkspaceRequest(name=name))
    workspace_id = reply.workspace.workspace_id
    if eligible:
        await stub.SetHipaaEligibility(
            policy_pb2.SetHipaaEligibilityRequest(
                workspace_id=workspace_id, eligible=True, baa_reference="BAA-2026-001"
            )
        )
    return workspace_id


async def new_destination(
    stub: policy_pb2_grpc.PolicyServiceStub,
    workspace_id: str,
    *,
    name: str = "Webhook",
    type_: int = CLOUD,
) -> str:
    reply = await stub.CreateDestination(
        policy_pb2.CreateDestinationRequest(
            workspace_id=workspace_id,
            name=name,
            type=type_,  # type: ignore[arg-type]
        )
    )
    return reply.destination.destination_id


async def outbox(database_url: str) -> list[dict[str, Any]]:
    """policysvc's audit outbox, oldest first, as the JSON events written."""
    con = await asyncpg.connect(database_url)
    try:
        rows = await con.fetch("SELECT event FROM policysvc.audit_outbox ORDER BY seq")
    finally:
        await con.close()
    return [orjson.loads(row["event"]) for row in rows]


async def event_types(database_url: str) -> list[str]:
    return [event["event_type"] for event in await outbox(database_url)]


async def status_of(call: Any) -> grpc.StatusCode:
    """The status code an awaited stub call fails with (OK if it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def error_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and message an awaited stub call fails with."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    pytest.fail("the call succeeded but was expected to fail")
