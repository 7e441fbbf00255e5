"""A stalled peer (its process stopped with SIGSTOP, its connections still open): encryptsvc's
health goes NOT_SERVING once it cannot confirm freshness within the bound, and SERVING again
as soon as the peer speaks (SIGCONT)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio
from grpc_health.v1 import health_pb2

from phiseal_dev.localpg import free_port
from phiseal_dev.testing import service_env
from tests.conftest import StartService
from tests.encryptsvc.conftest import HEARTBEAT, STALENESS, serve_encryptsvc
from tests.encryptsvc.stack import health, wait_for, wait_serving

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest_asyncio.fixture
async def policysvc_process(
    database_url: str,
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    """policysvc in a process of its own (so it can be stopped); answers its peer port."""
    peer_port, health_port = free_port(), free_port()
    env = {
        **os.environ,
        **service_env(
            "policysvc",
            database_url,
            {
                "POLICYSVC_PEER_PORT": str(peer_port),
                "POLICYSVC_HEALTH_PORT": str(health_port),
                "POLICYSVC_WATCH_HEARTBEAT_SECONDS": HEARTBEAT,
            },
        ),
    }
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
        [sys.executable, "-m", "services.policysvc"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{health_port}")
        await wait_serving(channel, within=30)
        await channel.close(None)
        yield process, peer_port
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


async def test_health_follows_a_stalled_peer(
    start: StartService, policysvc_process: tuple[subprocess.Popen[bytes], int]
) -> None:
    """SIGSTOP policysvc: encryptsvc NOT_SERVING within the bound (its watch stream stays
    connected, so before this it said SERVING for as long as the stall lasted); SIGCONT: SERVING."""
    process, policy_peer_port = policysvc_process
    keys = await start(
        "keysvc",
        POLICYSVC_ADDR=f"127.0.0.1:{policy_peer_port}",
        KEYSVC_WATCH_HEARTBEAT_SECONDS=HEARTBEAT,
    )
    encrypt = await serve_encryptsvc(start, policy_peer_port, keys.server.peer_port)
    channel = encrypt.channel()

    async def status_is(expected: int) -> bool:
        return await health(channel) == expected

    os.kill(process.pid, signal.SIGSTOP)
    try:
        await wait_for(lambda: status_is(health_pb2.HealthCheckResponse.NOT_SERVING), STALENESS + 2)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    await wait_for(lambda: status_is(SERVING), STALENESS + 2)
