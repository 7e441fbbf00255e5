"""ENCRYPTSVC_WORKERS: workers on one port, joint health, coherent caches, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc

from phiseal_dev.localpg import free_port
from phiseal_dev.testing import eventually, peer_channel, service_env
from services.common.server.config import ConfigError
from services.common.server.workers import WORKER_METRICS_STEP, reserve_port
from tests.encryptsvc.conftest import STALENESS, Stack
from tests.encryptsvc.stack import EXTRA_FIELDS, SAMPLES, health

SERVING = health_pb2.HealthCheckResponse.SERVING
# Connections are spread by the kernel's hash of each one's address pair: with this many, the
# chance that every one lands on the same one of two workers is 2**-15.
CONNECTIONS = 16


@dataclass
class Workers:
    """``python -m services.encryptsvc`` with ENCRYPTSVC_WORKERS, as a separate process."""

    process: asyncio.subprocess.Process
    port: int
    peer_port: int
    health_port: int
    metrics_port: int
    logs: list[dict[str, Any]] = field(default_factory=list)
    pump: asyncio.Task[None] | None = None

    def channel(self) -> grpc.aio.Channel:
        return peer_channel(f"127.0.0.1:{self.peer_port}", "producer")

    def health_channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.health_port}")

    def worker_pids(self) -> dict[int, int]:
        return {
            line["worker"]: line["pid"] for line in self.logs if line["event"] == "worker_started"
        }

    def workers_that_served(self) -> set[int]:
        return {
            line["worker"]
            for line in self.logs
            if line["event"] == "rpc_finished" and line.get("rpc", "").endswith("EncryptEvents")
        }

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(line)
                if isinstance(parsed, dict):
                    self.logs.append(parsed)


def free_port_pair() -> int:
    """A port p with p + WORKER_METRICS_STEP free as well (two workers' /metrics endpoints)."""
    for _ in range(50):
        port = free_port()
        if port + WORKER_METRICS_STEP > 65535:
            continue
        with (
            contextlib.suppress(OSError),
            reserve_port("127.0.0.1", port + WORKER_METRICS_STEP) as probe,
        ):
            probe.close()
            return port
    raise AssertionError("no free pair of ports")


async def start_workers(stack: Stack, count: int, **env: str) -> Workers:
    port, peer_port, health_port = free_port(), free_port(), free_port()
    metrics_port = free_port_pair()
    environ = {
        **os.environ,
        **service_env("encryptsvc", None, {}),
        "ENCRYPTSVC_PORT": str(port),
        "ENCRYPTSVC_PEER_PORT": str(peer_port),
        "ENCRYPTSVC_HEALTH_PORT": str(health_port),
        "ENCRYPTSVC_METRICS_PORT": str(metrics_port),
        "ENCRYPTSVC_WORKERS": str(count),
        "ENCRYPTSVC_MAX_STALENESS_SECONDS": str(STALENESS),
        "POLICYSVC_ADDR": f"127.0.0.1:{stack.policy_peer_port}",
        "KEYSVC_ADDR": f"127.0.0.1:{stack.keys_peer_port}",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.encryptsvc",
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    workers = Workers(process, port, peer_port, health_port, metrics_port)
    workers.pump = asyncio.create_task(workers._read())
    return workers


@pytest_asyncio.fixture
async def two_workers(stack: Stack) -> AsyncIterator[Workers]:
    workers = await start_workers(stack, 2)
    yield workers
    if workers.process.returncode is None:
        workers.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(workers.process.wait(), 30)
    if workers.pump is not None:
        await workers.pump


async def joint_health(workers: Workers) -> int | None:
    channel = workers.health_channel()
    try:
        return await health(channel)
    except grpc.aio.AioRpcError:
        return None
    finally:
        await channel.close(None)


async def wait_joint_serving(workers: Workers) -> None:
    async def serving() -> bool:
        return bool(await joint_health(workers) == SERVING)

    await eventually(serving, timeout=60)


def request(destination_id: str) -> encrypt_pb2.EncryptEventsRequest:
    return encrypt_pb2.EncryptEventsRequest(
        destination_id=destination_id,
        events=[orjson.dumps({**s, "messageId": f"w-{i}"}) for i, s in enumerate(SAMPLES)],
    )


async def test_workers_share_one_port_and_every_one_follows_policy_changes(
    stack: Stack, two_workers: Workers
) -> None:
    """Calls over many connections reach both workers, and each worker's cache applies a policy
    change from its own watch stream: every connection soon encrypts under the new version."""

    await wait_joint_serving(two_workers)
    channels = [two_workers.channel() for _ in range(CONNECTIONS)]
    try:
        stubs = [encrypt_pb2_grpc.EncryptServiceStub(c) for c in channels]
        first = await asyncio.gather(
            *(s.EncryptEvents(request(stack.destination_id)) for s in stubs)
        )
        before = {r.policy_version for r in first}
        assert len(before) == 1
        changed = await stack.admin.update(stack.destination_id, add=EXTRA_FIELDS[:1])

        async def all_see_it() -> bool:
            replies = await asyncio.gather(
                *(s.EncryptEvents(request(stack.destination_id)) for s in stubs)
            )
            return {r.policy_version for r in replies} == {changed}

        await eventually(all_see_it, timeout=10)
    finally:
        for channel in channels:
            await channel.close(None)
    assert two_workers.workers_that_served() == {0, 1}


async def test_every_worker_serves_its_own_metrics_endpoint(two_workers: Workers) -> None:
    """Each worker keeps its own counters, so worker k serves /metrics on METRICS_PORT + 100 k:
    both endpoints answer (a shared fixed port made the second worker fail to start)."""

    await wait_joint_serving(two_workers)

    def scrape(port: int) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return bytes(reply.read())

    for offset in (0, WORKER_METRICS_STEP):
        body = await asyncio.to_thread(scrape, two_workers.metrics_port + offset)
        assert b"phiseal_encrypt_" in body


async def test_a_dying_worker_takes_joint_health_down_and_stops_the_rest(
    two_workers: Workers,
) -> None:
    """A worker killed from outside: the supervisor reports NOT_SERVING, stops the other
    worker and exits 1 (the orchestrator restarts the unit; nothing is forked again)."""

    await wait_joint_serving(two_workers)
    pids = two_workers.worker_pids()
    assert sorted(pids) == [0, 1]
    os.kill(pids[1], signal.SIGKILL)
    assert await asyncio.wait_for(two_workers.process.wait(), 30) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    if two_workers.pump is not None:  # every line read, not just those read before the exit
        await two_workers.pump
    assert any(line["event"] == "worker_exited" for line in two_workers.logs)


async def test_sigterm_drains_every_worker_and_exits_cleanly(two_workers: Workers) -> None:
    """SIGTERM to the supervisor: every worker drains and exits 0 (the supervisor records each
    exit code) and the supervisor exits 0."""

    await wait_joint_serving(two_workers)
    two_workers.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(two_workers.process.wait(), 30) == 0
    if two_workers.pump is not None:
        await two_workers.pump
    # The supervisor's own record of each worker's exit: 0 means the worker drained and stopped
    # its server (a worker that died or was killed exits otherwise). The workers' own log lines
    # share the pipe and are not relied on.
    codes = [line["codes"] for line in two_workers.logs if line["event"] == "workers_stopped"]
    assert codes == [[0, 0]]


def test_a_fixed_port_already_in_use_is_refused_not_shared() -> None:
    """SO_REUSEPORT is on for the workers only: a port another process holds is refused."""
    holder = reserve_port("127.0.0.1", 0)
    holder.listen()
    try:
        with pytest.raises(ConfigError, match="already in use"):
            reserve_port("127.0.0.1", holder.getsockname()[1])
    finally:
        holder.close()
