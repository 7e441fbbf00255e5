"""`make run`: a private PostgreSQL (unless DATABASE_URL is set) and the four services.

Starts everything in the foreground with prefixed logs, prints how to call it, and on Ctrl-C or
SIGTERM stops the services (newest first, each within its grace period) and then PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import ConfigError, Env
from services.common.localpg import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Service:
    name: str
    port: int


# Started in this order (dependencies first) and stopped in the reverse one.
SERVICES = (
    Service("auditsvc", 50054),
    Service("policysvc", 50052),
    Service("keysvc", 50051),
    Service("encryptsvc", 50053),
)


def say(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


async def ensure_database(admin_url: str, name: str) -> None:
    con = await asyncpg.connect(admin_url)
    try:
        exists = await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()


async def pump(name: str, stream: asyncio.StreamReader) -> None:
    """Copies a child's log lines to our stderr, prefixed with its name."""
    while line := await stream.readline():
        sys.stderr.write(f"{name:<10} | {line.decode(errors='replace')}")
        sys.stderr.flush()


async def wait_serving(port: int, within: float) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            await asyncio.sleep(0.2)
    return False


async def run(environ: Mapping[str, str]) -> int:
    env = Env(environ)
    database_url = env.optional_text("DATABASE_URL")
    run_dir = Path(env.text("PHISEAL_RUN_DIR", str(ROOT / ".run")))
    ports = {s.name: env.integer(f"{s.name.upper()}_PORT", s.port, maximum=65535) for s in SERVICES}
    local_pg: LocalPostgres | None = None
    if database_url is None:
        local_pg = LocalPostgres(run_dir / "pgdata", port=env.integer("PHISEAL_PG_PORT", 54329))
        say(f"starting the private PostgreSQL in {local_pg.data_dir}")
        admin_url = await asyncio.to_thread(local_pg.start)
        await ensure_database(admin_url, "phiseal")
        database_url = local_pg.url("phiseal")
    children: list[tuple[Service, asyncio.subprocess.Process]] = []
    pumps: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    child_env = {
        **environ,
        "DATABASE_URL": database_url,
        **{f"{name.upper()}_ADDR": f"localhost:{port}" for name, port in ports.items()},
        "LOG_FORMAT": environ.get("LOG_FORMAT", "json"),
        "PYTHONUNBUFFERED": "1",
    }
    exit_code = 0
    try:
        for service in SERVICES:
            port = ports[service.name]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"services.{service.name}",
                env={**child_env, f"{service.name.upper()}_PORT": str(port)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: Ctrl-C reaches only us, and we stop the children in order.
                start_new_session=True,
            )
            assert proc.stdout is not None
            pumps.append(asyncio.create_task(pump(service.name, proc.stdout)))
            children.append((Service(service.name, port), proc))
            if not await wait_serving(port, within=60):
                say(f"{service.name} did not become SERVING on port {port}; stopping")
                exit_code = 1
                return exit_code
        print_banner([s for s, _ in children])
        waiters: list[asyncio.Task[object]] = [asyncio.create_task(p.wait()) for _, p in children]
        stopper: asyncio.Task[object] = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            dead = [s.name for (s, p) in children if p.returncode is not None]
            say(f"{', '.join(dead)} exited on its own; stopping everything")
            exit_code = 1
        for task in [stopper, *waiters]:
            task.cancel()
        return exit_code
    finally:
        for service, proc in reversed(children):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=15)
                except TimeoutError:
                    say(f"{service.name} did not stop in time; killing it")
                    proc.kill()
                    await proc.wait()
        for task in pumps:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=2)
        if local_pg is not None:
            say("stopping PostgreSQL")
            await asyncio.to_thread(local_pg.stop)
        say("stopped")


def print_banner(services: list[Service]) -> None:
    lines = ["", "PHIseal is up:"]
    lines += [f"  {s.name:<11} localhost:{s.port}" for s in services]
    grpcurl = Path(sys.executable).parent / "grpcurl"
    port = {s.name: s.port for s in services}
    lines += [
        "",
        "Try it (grpcurl ships in the virtualenv):",
        f"  {grpcurl} -plaintext localhost:{port['policysvc']} list",
        f"  {grpcurl} -plaintext localhost:{port['keysvc']} grpc.health.v1.Health/Check",
        f'  {grpcurl} -plaintext -d \'{{"name": "Acme Health"}}\' '
        f"localhost:{port['policysvc']} phiseal.policy.v1.PolicyService/CreateWorkspace",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    try:
        code = asyncio.run(run(os.environ))
    except ConfigError as exc:
        print(f"devstack: configuration error: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


if __name__ == "__main__":
    main()
