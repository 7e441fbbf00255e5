"""Servers under test as separate processes: start, wait for health, CPU time and memory, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phiseal_dev.loadgen import CallTarget
from phiseal_dev.localpg import free_port
from phiseal_dev.testing import service_env, session_secrets

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and its children (a supervisor and its workers)."""
    return [pid, *_children(pid)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children, in seconds (Linux /proc)."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
    return total


@dataclass
class ServerProcess:
    """A server started as ``python -m <module>``, reached on its mutual-TLS peer port."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    peer_port: int
    health_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def target(self, method: str, request: bytes, identity: str = "producer") -> CallTarget:
        """A call to this server as ``identity`` (client certificate from the session CA)."""
        secrets = session_secrets()
        files = secrets.files(identity)
        return CallTarget(
            address=f"127.0.0.1:{self.peer_port}",
            method=method,
            request=request,
            root_certificates=secrets.ca_pem,
            certificate_chain=files.cert.read_bytes(),
            private_key=files.key.read_bytes(),
        )

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode or 0


async def wait_serving(port: int, within: float = 90) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing SERVING on health port {port} within {within} s")


def _dying_with_us() -> list[str]:
    """A prefix that has the kernel send SIGTERM to the server when this process dies: a
    benchmark that crashed once left six servers running (their peers gone, retrying), taking
    CPU from every later measurement. util-linux's setpriv where present, nothing otherwise."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


async def start_server(
    name: str,
    module: str,
    args: list[str],
    env: Mapping[str, str],
    *,
    service: str = "encryptsvc",
    database_url: str | None = None,
) -> ServerProcess:
    """``python -m module args`` with ``service``'s settings on fresh ports and the session's
    development secrets (TLS on, mutual TLS on the peer port); waits for SERVING."""
    port, peer_port, health_port = free_port(), free_port(), free_port()
    log_path = Path(tempfile.mkdtemp(prefix="phiseal-bench-")) / f"{name}.log"
    prefix = service.upper()
    environ = {
        **os.environ,
        **service_env(service, database_url, {}),
        f"{prefix}_PORT": str(port),
        f"{prefix}_PEER_PORT": str(peer_port),
        f"{prefix}_HEALTH_PORT": str(health_port),
        # Its own too: the default (service port + 300) can be another server's random port.
        f"{prefix}_METRICS_PORT": str(free_port()),
        "LOG_FORMAT": "json",
        **env,
    }
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *_dying_with_us(),
            sys.executable,
            "-m",
            module,
            *args,
            env=environ,
            stdout=log,
            stderr=log,
        )
    server = ServerProcess(name, process, port, peer_port, health_port, log_path)
    try:
        await wait_serving(health_port)
    except BaseException:
        await server.stop()
        raise
    return server
