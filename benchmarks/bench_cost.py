"""The worst request at the caps, per policysvc RPC that takes variable input, against a
concurrent GetPolicy: does the event loop stay free?

policysvc runs as in production: its own process (``python -m services.policysvc``), TLS on the
service port, mutual TLS for encryptsvc's GetPolicy. A prober in another process calls
GetPolicy as encryptsvc back to back, first idle, then while each worst request is sent from
this process back to back for BENCH_COST_SECONDS (5 s; at least BENCH_COST_RUNS, 3, times).
Printed: how many were sent and the slowest, and the prober's p50/p99 next to the idle p99 as a
ratio (target: within 3x). BENCH_COST_ONLY=<part of a name> runs only those.

The three are separate processes as in production: a client building or reading a 4 MB request
in the server's or the prober's process would measure its own pauses, not the server's.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from benchmarks.processes import start_server
from phiseal_dev.testing import PgCluster, person_channel, session_secrets
from services.common.server.logging import configure_logging
from services.policysvc import caps
from services.policysvc.classification import MAX_CUSTOM_MATCHERS
from services.policysvc.detectors import DETECTORS

# Each worst request is sent back to back for at least this long (and at least RUNS times), so
# the prober's p99 is a percentile of a thousand-odd calls, not the slowest of a few dozen.
SECONDS = float(os.environ.get("BENCH_COST_SECONDS", "5"))
RUNS = int(os.environ.get("BENCH_COST_RUNS", "3"))
IDLE_CALLS = int(os.environ.get("BENCH_COST_IDLE_CALLS", "1500"))
ONLY = os.environ.get("BENCH_COST_ONLY", "")  # run only the worst requests whose name has this
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
        server = await start_server(
            "policysvc",
            "services.policysvc",
            [],
            {"LOG_LEVEL": "error"},
            service="policysvc",
            database_url=url,
        )
        try:
            async with person_channel(f"127.0.0.1:{server.port}") as channel:
                await measure(PolicyServiceStub(channel), f"127.0.0.1:{server.peer_port}")
        finally:
            await server.stop()
    finally:
        cluster.stop()


class Prober:
    """benchmarks.cost_prober in its own process: GetPolicy as encryptsvc."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, address: str, destination_id: str) -> Prober:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.cost_prober",
            address,
            str(session_secrets().folder),
            destination_id,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # one JSON line of every latency
        )
        return cls(process)

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def answer(self) -> list[float]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the prober stopped (a GetPolicy failed: see its stderr)")
        times: list[float] = orjson.loads(line)
        return times

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await self.process.wait()


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


async def measure(admin: PolicyServiceStub, peer_address: str) -> None:
    workspace_id, destination_id = await setup(admin)
    prober = await Prober.start(peer_address, destination_id)
    try:
        await measure_with(admin, prober, workspace_id, destination_id)
    finally:
        await prober.close()


async def measure_with(
    admin: PolicyServiceStub, prober: Prober, workspace_id: str, destination_id: str
) -> None:
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
    await prober.send(f"idle {IDLE_CALLS}")
    idle = await prober.answer()
    idle99 = percentile(idle, 0.99)
    print(f"samples: {len(samples)} events, {sum(map(len, samples))} characters; ", end="")
    print(f"{KEY_MATCHERS} key and {VALUE_MATCHERS} value regex matchers; TLS on")
    print(
        f"idle GetPolicy (encryptsvc, mTLS)          p50 {percentile(idle, 0.5):7.2f} ms   "
        f"p99 {idle99:7.2f} ms"
    )
    for name, call in worst.items():
        if ONLY.lower() not in name.lower():
            continue
        await prober.send("start")
        took: list[float] = []
        until = time.perf_counter() + SECONDS
        while len(took) < RUNS or time.perf_counter() < until:
            sent = time.perf_counter()
            await call()
            took.append((time.perf_counter() - sent) * 1000)
        await prober.send("stop")
        during = await prober.answer()
        p99 = percentile(during, 0.99)
        print(
            f"{name:31s} {len(took):3d}x worst {max(took):6.0f} ms | GetPolicy x{len(during):4d} "
            f"p50 {percentile(during, 0.5):6.2f} ms p99 {p99:6.2f} ms = {p99 / idle99:4.2f}x idle"
        )
