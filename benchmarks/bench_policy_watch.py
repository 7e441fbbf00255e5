"""Policy change propagation: a change through one policysvc replica reaching another's watcher.

Two policysvc replicas share one (private) PostgreSQL. 100 policy changes go through replica A;
a WatchPolicies subscriber of replica B timestamps each CHANGED message. Printed: the time from
sending the change to its arrival at B (p50, p99), next to the change RPC's own round trip on A
as the in-run baseline.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from phiseal_dev.testing import PgCluster, start_service
from services.common.server.logging import configure_logging

CHANGES = 100


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main() -> None:
    # error: without an auditsvc here, the relays retry and warn on every attempt.
    configure_logging("error", "json")
    cluster = PgCluster.start()
    try:
        await cluster.build_template()
        url = await cluster.create_database()
        env = {"POLICYSVC_WATCH_HEARTBEAT_SECONDS": "1"}
        a = await start_service("policysvc", url, env)
        b = await start_service("policysvc", url, env)
        try:
            await measure(PolicyServiceStub(a.channel()), PolicyServiceStub(b.channel()))
        finally:
            await a.stop()
            await b.stop()
    finally:
        cluster.stop()


async def next_message(call: Any) -> policy_pb2.WatchPoliciesResponse:
    message: policy_pb2.WatchPoliciesResponse = await call.read()
    return message


async def measure(a: PolicyServiceStub, b: PolicyServiceStub) -> None:
    workspace = (await a.CreateWorkspace(policy_pb2.CreateWorkspaceRequest(name="bench"))).workspace
    await a.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(
            workspace_id=workspace.workspace_id, eligible=True, baa_reference="BAA-bench"
        )
    )
    destination_id = (
        await a.CreateDestination(
            policy_pb2.CreateDestinationRequest(
                workspace_id=workspace.workspace_id,
                name="bench",
                type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
            )
        )
    ).destination.destination_id

    arrived: dict[int, float] = {}
    waiting: dict[int, asyncio.Event] = {}
    call = b.WatchPolicies(policy_pb2.WatchPoliciesRequest(destination_ids=[destination_id]))
    first = await next_message(call)
    assert first.kind == common_pb2.CHANGE_KIND_RESYNC

    async def follow() -> None:
        while True:
            message = await next_message(call)
            if message.kind == common_pb2.CHANGE_KIND_CHANGED:
                arrived[message.version] = time.perf_counter()
                waiting.setdefault(message.version, asyncio.Event()).set()

    reader = asyncio.create_task(follow())
    await a.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(destination_id=destination_id, fields=["traits.email"])
    )
    propagation: list[float] = []
    round_trip: list[float] = []
    for version in range(1, CHANGES + 1):
        field = "traits.name"
        request = policy_pb2.UpdateEncryptedFieldsRequest(
            destination_id=destination_id,
            expected_version=version,
            add=[field] if version % 2 else [],
            remove=[] if version % 2 else [field],
        )
        sent = time.perf_counter()
        await a.UpdateEncryptedFields(request)
        round_trip.append((time.perf_counter() - sent) * 1000)
        event = waiting.setdefault(version + 1, asyncio.Event())
        await asyncio.wait_for(event.wait(), 30)
        propagation.append((arrived[version + 1] - sent) * 1000)
    reader.cancel()
    call.cancel()

    p50, p99 = percentile(propagation, 0.5), percentile(propagation, 0.99)
    rt50, rt99 = percentile(round_trip, 0.5), percentile(round_trip, 0.99)
    print(f"changes through replica A, observed by a WatchPolicies subscriber of B: {CHANGES}")
    print(f"propagation (send on A -> CHANGED at B)  p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    print(f"baseline: change RPC round trip on A      p50 {rt50:7.2f} ms   p99 {rt99:7.2f} ms")
    print(f"ratio propagation/round trip (p50): {p50 / rt50:.2f}x")
    print(f"mean propagation {statistics.fmean(propagation):.2f} ms")
