"""`make run`: a private PostgreSQL (unless DATABASE_URL is set), the four services, the console.

The database is set up as production has it (docs/database-roles.md): migrations run here as
the owner role, and each service connects as its own role that owns nothing. A DATABASE_URL
given here must name a role that may create roles (a superuser on a development server).

Creates the development secrets once under ``<PHISEAL_RUN_DIR>/dev-secrets`` (a CA, a
certificate per service and for ``producer``, the token signing key) and a fresh development
admin token, starts every service with TLS on its service port and mutual TLS on its peer port
(peers call each other only there), waits for SERVING on the plaintext health-only ports,
starts the web console (HTTPS, calling the services' TLS ports with the signed-in person's
token, with a development sign-in as the admin), prints how to call it, and on Ctrl-C or
SIGTERM stops the console and the services (newest first, each within its grace period) and
then PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phiseal_dev import dbroles
from phiseal_dev.localpg import LocalPostgres
from phiseal_dev.pki import DevPki
from phiseal_dev.tokens import DevSigningKey
from services.common.security.authz import WILDCARD
from services.common.security.tls import CLIENT_IDENTITIES, SERVICE_IDENTITIES, write_private
from services.common.security.tokens import MAX_LIFETIME_SECONDS
from services.common.server.config import ConfigError, Env
from services.migrate import migrate_all

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    # Mutual TLS for peer services; plaintext grpc.health.v1.Health only; HTTP /metrics.
    peer_port: int = 0
    health_port: int = 0
    metrics_port: int = 0


# Started in this order (dependencies first) and stopped in the reverse one.
SERVICES = (
    Service("auditsvc", 50054),
    Service("policysvc", 50052),
    Service("keysvc", 50051),
    Service("encryptsvc", 50053),
)


ADMIN_TOKEN = "admin.token"
# The console's HTTPS certificate (DNS localhost, IP 127.0.0.1) from the development CA.
CONSOLE_IDENTITY = "console"
CONSOLE_PORT = 8443


def prepare_secrets(folder: Path) -> Path:
    """CA, certificates and token key (created once, then kept) and a fresh admin token."""
    DevPki(folder).ensure((*SERVICE_IDENTITIES, *CLIENT_IDENTITIES, CONSOLE_IDENTITY))
    key = DevSigningKey(folder)
    key.ensure()
    token = key.minter().mint(
        "dev-admin", {WILDCARD: ["admin", "auditor"]}, ttl_seconds=MAX_LIFETIME_SECONDS
    )
    path = folder / ADMIN_TOKEN
    write_private(path, token.encode() + b"\n")
    return path


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


async def wait_console(port: int, ca: Path, within: float) -> bool:
    """Whether the console answers its health endpoint over HTTPS within ``within`` seconds."""
    context = ssl.create_default_context(cafile=str(ca))
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("localhost", port, ssl=context)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            status = await reader.readline()
            writer.close()
            if status.startswith(b"HTTP/1.1 200"):
                return True
        await asyncio.sleep(0.2)
    return False


async def run(environ: Mapping[str, str]) -> int:
    env = Env(environ)
    database_url = env.optional_text("DATABASE_URL")
    run_dir = Path(env.text("PHISEAL_RUN_DIR", str(ROOT / ".run")))
    services = [configured(s, env) for s in SERVICES]
    console_port = env.integer("CONSOLE_PORT", CONSOLE_PORT, minimum=1, maximum=65535)
    secrets_dir = run_dir / "dev-secrets"
    say(f"development CA, certificates and admin token in {secrets_dir}")
    prepare_secrets(secrets_dir)
    local_pg: LocalPostgres | None = None
    if database_url is None:
        local_pg = LocalPostgres(run_dir / "pgdata", port=env.integer("PHISEAL_PG_PORT", 54329))
        say(f"starting the private PostgreSQL in {local_pg.data_dir}")
        admin_url = await asyncio.to_thread(local_pg.start)
        await ensure_database(admin_url, "phiseal")
        database_url = local_pg.url("phiseal")
    database = urlsplit(database_url).path.lstrip("/") or "postgres"
    await dbroles.ensure_roles(database_url, database)
    if stale := await dbroles.foreign_schemas(database_url):
        raise ConfigError(
            f"schemas {', '.join(stale)} predate the owner role {dbroles.OWNER}: "
            f"remove the development database (rm -rf {run_dir / 'pgdata'}) and run again"
        )
    say(f"migrations as {dbroles.OWNER}; services connect as roles that own nothing")
    await migrate_all(dbroles.owner_url(database_url))
    children: list[tuple[Service, asyncio.subprocess.Process]] = []
    pumps: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    child_env = {
        **environ,
        # Development only: auditsvc makes (and trusts) its checkpoint signing key.
        "AUDITSVC_SIGNING_KEY_GENERATE": "true",
        # Peers reach each other only on the mutual-TLS peer ports.
        **{f"{s.name.upper()}_ADDR": f"localhost:{s.peer_port}" for s in services},
        "PHISEAL_TLS_DIR": str(secrets_dir),
        # Every file a service writes lands under the run folder: auditsvc's signing key,
        # trusted keys and checkpoint journal too (their defaults follow PHISEAL_RUN_DIR).
        "PHISEAL_RUN_DIR": str(run_dir),
        "LOG_FORMAT": environ.get("LOG_FORMAT", "json"),
        "PYTHONUNBUFFERED": "1",
    }
    exit_code = 0
    try:
        for service in services:
            prefix = service.name.upper()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"services.{service.name}",
                env={
                    **child_env,
                    f"{prefix}_PORT": str(service.port),
                    f"{prefix}_PEER_PORT": str(service.peer_port),
                    f"{prefix}_HEALTH_PORT": str(service.health_port),
                    f"{prefix}_METRICS_PORT": str(service.metrics_port),
                    "DATABASE_URL": dbroles.runtime_url(database_url, service.name),
                },
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: Ctrl-C reaches only us, and we stop the children in order.
                start_new_session=True,
            )
            assert proc.stdout is not None
            pumps.append(asyncio.create_task(pump(service.name, proc.stdout)))
            children.append((service, proc))
            if not await wait_serving(service.health_port, within=60):
                say(
                    f"{service.name} did not become SERVING on port {service.health_port}; stopping"
                )
                exit_code = 1
                return exit_code
        console = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.console",
            env={
                **child_env,
                "CONSOLE_PORT": str(console_port),
                # People's ports (TLS + bearer token), not the peer ports: the console is a
                # client acting as the signed-in person, never a service.
                **{f"CONSOLE_{s.name.upper()}_ADDR": f"localhost:{s.port}" for s in services},
                "CONSOLE_DEV_TOKEN_FILE": str(secrets_dir / ADMIN_TOKEN),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        assert console.stdout is not None
        pumps.append(asyncio.create_task(pump("console", console.stdout)))
        children.append((Service("console", console_port), console))
        if not await wait_console(console_port, secrets_dir / "ca.pem", within=60):
            say(f"the console did not answer on port {console_port}; stopping")
            exit_code = 1
            return exit_code
        print_banner([s for s, _ in children if s.name != "console"], secrets_dir, console_port)
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


def configured(service: Service, env: Env) -> Service:
    """The service's ports: <SVC>_PORT, and peer/health/metrics ports 100/200/300 above it."""
    prefix = service.name.upper()
    port = env.integer(f"{prefix}_PORT", service.port, minimum=1, maximum=65235)
    return Service(
        service.name,
        port,
        peer_port=env.integer(f"{prefix}_PEER_PORT", port + 100, minimum=1, maximum=65535),
        health_port=env.integer(f"{prefix}_HEALTH_PORT", port + 200, minimum=1, maximum=65535),
        metrics_port=env.integer(f"{prefix}_METRICS_PORT", port + 300, minimum=1, maximum=65535),
    )


def print_banner(services: list[Service], secrets: Path, console_port: int) -> None:
    bin_dir = Path(sys.executable).parent
    grpcurl, token_cli = bin_dir / "grpcurl", bin_dir / "phiseal-token"
    by_name = {s.name: s for s in services}
    policy, encrypt, keys = by_name["policysvc"], by_name["encryptsvc"], by_name["keysvc"]
    tls = f"-cacert {secrets}/ca.pem"
    bearer = f'-H "authorization: Bearer $(cat {secrets}/{ADMIN_TOKEN})"'
    lines = ["", "PHIseal is up (TLS; people bring a bearer token, services mutual TLS):"]
    lines += [
        f"  {s.name:<11} localhost:{s.port}  peer (mTLS) :{s.peer_port}  "
        f"health (plaintext) :{s.health_port}  metrics http://localhost:{s.metrics_port}/metrics"
        for s in services
    ]
    lines += [
        "",
        "Try it (grpcurl ships in the virtualenv):",
        f"  {grpcurl} {tls} {bearer} localhost:{policy.port} list",
        f'  {grpcurl} {tls} {bearer} -d \'{{"name": "Acme Health"}}\' '
        f"localhost:{policy.port} phiseal.policy.v1.PolicyService/CreateWorkspace",
        f"  {grpcurl} -plaintext localhost:{keys.health_port} grpc.health.v1.Health/Check",
        "As the event pipeline (client certificate `producer`, on encryptsvc's peer port):",
        f"  {grpcurl} {tls} -cert {secrets}/producer.pem -key {secrets}/producer-key.pem "
        f"localhost:{encrypt.peer_port} list",
        "A token for one person and workspace (development signing key):",
        f"  {token_cli} --secrets-dir {secrets} --sub alice --workspace ws_1=viewer",
        "",
        f"The console: https://localhost:{console_port}  (development sign-in as dev-admin; "
        f"its certificate is from the development CA {secrets}/ca.pem)",
        "The story end to end (workspace, keys, encryption, rotation, audit): make demo",
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
