"""The worst request at the caps, per policysvc RPC that takes variable input, against a
concurrent GetPolicy: does the event loop stay free?

policysvc runs as in production (TLS on the service port, mutual TLS for encryptsvc's
GetPolicy). A prober calls GetPolicy as encryptsvc back to back, first idle, then while each
worst request runs (three times in a row). Printed: each worst request's own time, and the
prober's p50/p99 next to the idle p99 as a ratio (target: within 3x).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from phiseal_dev.testing import PgCluster, start_service
from services.common.server.logging import configure_logging
from services.policysvc import caps
from services.policysvc.classification import MAX_CUSTOM_MATCHERS
from services.policysvc.detectors import DETECTORS

IDLE_CALLS = 300
RUNS = 3
KEY_MATCHERS = MAX_CUSTOM_MATCHERS // 2
VALUE_MATCHERS = MAX_CUSTOM_MATCHERS - KEY_MATCHERS


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wide_samples() -> list[str]:
    """Samples filling the character cap with as many distinct paths as allowed, values within
    the value-check cap: the most parsing, walking and matching one request may ask for."""
    # Each string value is a check per value matcher and per built-in detector.
    values = caps.MAX_VALUE_CHECKS // (VALUE_MATCHERS + len(DETECTORS)) - 50
    keys = min(values, caps.MAX_SAMPLED_PATHS - 10)
    event = {"properties": {"items": [{f"k{i % keys}": f"v{i}"} for i in range(values)]}}
    text = orjson.dumps(event).decode()
    # The rest of the characters as one long value the walk still has to cross.
    filler = orjson.dumps({"traits": {"note": "x" * (200 * 1024)}}).decode()
    count = (caps.MAX_SAMPLE_CHARS - len(text)) // len(filler)
    return [text, *[filler] * count]


def paths(prefix: str) -> list[str]:
    return [f"properties.{prefix}{i}.f{i}" for i in range(caps.MAX_PATHS_PER_REQUEST)]


async def main() -> None:
    configure_logging("error", "json")
    cluster = PgCluster.start()
    try:
        await cluster.build_template()
        url = await cluster.create_database()
        service = await start_service("policysvc", url, {})
        try:
            admin = PolicyServiceStub(service.channel())
            encryptsvc = PolicyServiceStub(service.peer_channel("encryptsvc"))
            await measure(admin, encryptsvc)
        finally:
            await service.stop()
    finally:
        cluster.stop()


async def setup(admin: PolicyServiceStub) -> tuple[str, str]:
    ws = (await admin.CreateWorkspace(policy_pb2.CreateWorkspaceRequest(name="b"))).workspace
    workspace_id = ws.workspace_id
    await admin.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(
            workspace_id=workspace_id, eligible=True, baa_reference="BAA-bench"
        )
    )
    destination_id = (
        await admin.CreateDestination(
            policy_pb2.CreateDestinationRequest(
                workspace_id=workspace_id,
                name="bench",
                type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
            )
        )
    ).destination.destination_id
    for i in range(MAX_CUSTOM_MATCHERS):
        key = i < KEY_MATCHERS
        target = policy_pb2.MATCHER_TARGET_KEY if key else policy_pb2.MATCHER_TARGET_VALUE
        # Regexes that never match, bar the last key matcher (so the paths can be encrypted):
        # every matcher is tried on every key or value.
        pattern = "^f[0-9]+$" if i == KEY_MATCHERS - 1 else rf"^zz\d{{3}}-\d{{2}}-{i}$"
        await admin.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=workspace_id,
                add_matcher=policy_pb2.Matcher(
                    name=f"m{i}",
                    target=target,
                    kind=policy_pb2.MATCH_KIND_REGEX,
                    pattern=pattern,
                    classification=policy_pb2.CLASSIFICATION_YELLOW,
                ),
            )
        )
    await admin.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(destination_id=destination_id, fields=["traits.email"])
    )
    return workspace_id, destination_id


async def probe(stub: PolicyServiceStub, destination_id: str, stop: asyncio.Event) -> list[float]:
    request = policy_pb2.GetPolicyRequest(destination_id=destination_id)
    times = []
    while not stop.is_set():
        sent = time.perf_counter()
        await stub.GetPolicy(request, timeout=2.0)
        times.append((time.perf_counter() - sent) * 1000)
    return times


async def measure(admin: PolicyServiceStub, encryptsvc: PolicyServiceStub) -> None:
    workspace_id, destination_id = await setup(admin)
    samples = wide_samples()
    version = [1]

    async def enable() -> Any:
        reply = await admin.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(
                destination_id=destination_id, fields=paths("e"), expected_version=version[0]
            ),
            timeout=60,
        )
        version[0] = reply.policy.version
        # Back to one field, so the next run adds the same paths again.
        reply = await admin.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(
                destination_id=destination_id, fields=["traits.email"], expected_version=version[0]
            )
        )
        version[0] = reply.policy.version

    async def update() -> Any:
        reply = await admin.UpdateEncryptedFields(
            policy_pb2.UpdateEncryptedFieldsRequest(
                destination_id=destination_id,
                add=paths("u")[: caps.MAX_POLICY_FIELDS - 1],
                expected_version=version[0],
            ),
            timeout=60,
        )
        version[0] = reply.policy.version
        back = await admin.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(
                destination_id=destination_id, fields=["traits.email"], expected_version=version[0]
            )
        )
        version[0] = back.policy.version

    worst: dict[str, Callable[[], Awaitable[Any]]] = {
        "ListClassifications (samples)": lambda: admin.ListClassifications(
            policy_pb2.ListClassificationsRequest(workspace_id=workspace_id, sample_events=samples),
            timeout=120,
        ),
        "ListSelectableFields (samples)": lambda: admin.ListSelectableFields(
            policy_pb2.ListSelectableFieldsRequest(
                destination_id=destination_id, sample_events=samples
            ),
            timeout=120,
        ),
        "ListClassifications (paths)": lambda: admin.ListClassifications(
            policy_pb2.ListClassificationsRequest(workspace_id=workspace_id, paths=paths("l")),
            timeout=60,
        ),
        "EnableEncryption": enable,
        "UpdateEncryptedFields": update,
        "PreviewEncryption": lambda: admin.PreviewEncryption(
            policy_pb2.PreviewEncryptionRequest(
                destination_id=destination_id,
                sample_events=samples,
                proposed_fields=paths("p"),
                use_proposed_fields=True,
            ),
            timeout=120,
        ),
    }
    await worst["ListClassifications (paths)"]()  # starts the analysis worker
    idle = await probe_n(encryptsvc, destination_id, IDLE_CALLS)
    idle99 = percentile(idle, 0.99)
    print(f"samples: {len(samples)} events, {sum(map(len, samples))} characters; ", end="")
    print(f"{KEY_MATCHERS} key and {VALUE_MATCHERS} value regex matchers; TLS on")
    print(
        f"idle GetPolicy (encryptsvc, mTLS)          p50 {percentile(idle, 0.5):7.2f} ms   "
        f"p99 {idle99:7.2f} ms"
    )
    for name, call in worst.items():
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(encryptsvc, destination_id, stop))
        took = []
        for _ in range(RUNS):
            sent = time.perf_counter()
            await call()
            took.append((time.perf_counter() - sent) * 1000)
        stop.set()
        during = await prober
        p99 = percentile(during, 0.99)
        print(
            f"{name:31s} worst {max(took):8.0f} ms | GetPolicy x{len(during):4d} "
            f"p50 {percentile(during, 0.5):6.2f} ms p99 {p99:6.2f} ms = {p99 / idle99:4.2f}x idle"
        )


async def probe_n(stub: PolicyServiceStub, destination_id: str, n: int) -> list[float]:
    request = policy_pb2.GetPolicyRequest(destination_id=destination_id)
    times = []
    for _ in range(n):
        sent = time.perf_counter()
        await stub.GetPolicy(request, timeout=2.0)
        times.append((time.perf_counter() - sent) * 1000)
    return times
