"""WatchPolicies: changes committed through any replica reach every replica's watchers."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from tests.conftest import StartService
from tests.policysvc.conftest import error_of, new_destination, new_workspace, status_of

CHANGED = common_pb2.CHANGE_KIND_CHANGED
RESYNC = common_pb2.CHANGE_KIND_RESYNC
HEARTBEAT = common_pb2.CHANGE_KIND_HEARTBEAT
FAST = {"POLICYSVC_WATCH_HEARTBEAT_SECONDS": "0.1"}


async def next_message(
    call: Any, *, skip_heartbeats: bool = True
) -> policy_pb2.WatchPoliciesResponse:
    """The next message of a watch stream (heartbeats skipped unless asked for)."""
    async with asyncio.timeout(30):  # a guard against a hang, not a measurement
        while True:
            message: policy_pb2.WatchPoliciesResponse = await call.read()
            if not (skip_heartbeats and message.kind == HEARTBEAT):
                return message


async def two_replicas(start: StartService) -> tuple[PolicyServiceStub, PolicyServiceStub]:
    first = await start("policysvc", **FAST)
    second = await start("policysvc", **FAST)
    return PolicyServiceStub(first.channel()), PolicyServiceStub(second.channel())


async def enable_email(stub: PolicyServiceStub, destination_id: str, expected: int = 0) -> None:
    await stub.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(
            destination_id=destination_id, fields=["traits.email"], expected_version=expected
        )
    )


async def test_change_through_one_replica_reaches_watcher_of_another(
    start: StartService,
) -> None:
    """A watcher of replica B sees RESYNC, then the change committed through replica A."""
    a, b = await two_replicas(start)
    destination_id = await new_destination(a, await new_workspace(a))
    call = b.WatchPolicies(policy_pb2.WatchPoliciesRequest())
    first = await next_message(call)
    await enable_email(a, destination_id)
    change = await next_message(call)
    call.cancel()
    assert first.kind == RESYNC
    assert (change.kind, change.destination_id, change.version) == (CHANGED, destination_id, 1)
    assert change.HasField("observed_at")


async def test_watch_filters_by_destination(start: StartService) -> None:
    """A watcher of one destination does not see another destination's changes."""
    a, b = await two_replicas(start)
    workspace_id = await new_workspace(a)
    mine = await new_destination(a, workspace_id, name="mine")
    other = await new_destination(a, workspace_id, name="other")
    call = b.WatchPolicies(policy_pb2.WatchPoliciesRequest(destination_ids=[mine]))
    await next_message(call)  # RESYNC
    await enable_email(a, other)
    await enable_email(a, mine)
    change = await next_message(call)
    call.cancel()
    assert (change.destination_id, change.version) == (mine, 1)


async def test_failed_change_is_not_announced(start: StartService) -> None:
    """A refused change notifies nobody: the next message is the next committed change."""
    a, b = await two_replicas(start)
    destination_id = await new_destination(a, await new_workspace(a))
    call = b.WatchPolicies(policy_pb2.WatchPoliciesRequest())
    await next_message(call)  # RESYNC
    refused = await status_of(enable_email(a, destination_id, expected=7))
    await enable_email(a, destination_id)
    change = await next_message(call)
    call.cancel()
    assert (refused, change.version) == (grpc.StatusCode.ABORTED, 1)


async def test_watch_sends_heartbeats(start: StartService) -> None:
    """While the feed is live, watchers get HEARTBEATs stamped with observed_at."""
    service = await start("policysvc", **FAST)
    call = PolicyServiceStub(service.channel()).WatchPolicies(policy_pb2.WatchPoliciesRequest())
    await next_message(call)  # RESYNC
    beat = await next_message(call, skip_heartbeats=False)
    call.cancel()
    assert (beat.kind, beat.HasField("observed_at")) == (HEARTBEAT, True)


async def test_watcher_gets_resync_after_feed_connection_is_killed(
    start: StartService, database_url: str
) -> None:
    """When the LISTEN connection dies, watchers get a RESYNC once it is re-established."""
    service = await start("policysvc", **FAST)
    stub = PolicyServiceStub(service.channel())
    call = stub.WatchPolicies(policy_pb2.WatchPoliciesRequest())
    await next_message(call)  # RESYNC
    con = await asyncpg.connect(database_url)
    try:
        killed = await con.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'policysvc-changefeed' AND datname = current_database()"
        )
    finally:
        await con.close()
    after = await next_message(call)
    destination_id = await new_destination(stub, await new_workspace(stub))
    await enable_email(stub, destination_id)
    change = await next_message(call)
    call.cancel()
    assert (killed, after.kind) == (1, RESYNC)
    assert (change.kind, change.destination_id) == (CHANGED, destination_id)


async def test_watch_refuses_too_many_destinations(start: StartService) -> None:
    """More than 1000 destination_ids is RESOURCE_EXHAUSTED naming the cap."""
    service = await start("policysvc")
    call = PolicyServiceStub(service.channel()).WatchPolicies(
        policy_pb2.WatchPoliciesRequest(destination_ids=[f"dst_{i}" for i in range(1001)])
    )
    code, message = await error_of(call.read())
    assert (code, "cap of 1000" in message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, True)
