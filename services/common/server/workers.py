"""Worker processes on one port: a supervisor forks N servers, joins their health, drains all.

Python runs one core's worth of work per process, so a CPU-bound service (encryptsvc) serves from
several processes that bind the same ports with SO_REUSEPORT; the kernel spreads connections
between them. The supervisor forks *before* it or anything else has created a gRPC object (grpc's
threads and polling state do not survive a fork), so each worker builds its own server, peer
channels, caches and watch streams from nothing. Nothing is shared after the fork: each worker's
caches stay coherent through its own watch streams, exactly as separate replicas' do.

The supervisor serves the plaintext health port itself: SERVING only while every worker reports
SERVING (each worker sends its own health over a pipe). SIGTERM or SIGINT: health NOT_SERVING,
SIGTERM to every worker (each drains its calls within its grace period), then exit. A worker that
exits on its own stops the others and the supervisor exits 1: re-forking from a process that now
runs a gRPC server is exactly what must not happen, so the orchestrator restarts the whole unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from services.common.server.config import ConfigError, ServerSettings

log = structlog.get_logger("workers")

SERVING_BYTE = b"1"
NOT_SERVING_BYTE = b"0"
# Beyond the workers' own grace period: how long they get to exit before SIGKILL.
_EXIT_MARGIN_SECONDS = 5.0


WORKER_METRICS_STEP = 100


def default_workers() -> int:
    """The CPUs this process may run on (cgroup/affinity aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket that holds ``port`` for the workers.

    SO_REUSEPORT would also let a second, unrelated instance share a port silently, so a
    fixed port is first bound without it: if anything already holds the port, this refuses
    with "address in use" as a single-process service would.
    """
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    address = host.strip("[]")
    if address == "localhost":
        address = "127.0.0.1"
    if port != 0:
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use") from None
            raise
        finally:
            probe.close()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((address, port))
    return sock


@dataclass(frozen=True)
class WorkerLink:
    """A worker's ends of its two pipes to the supervisor."""

    index: int
    status_fd: int  # worker → supervisor: one byte per change of its health
    control_fd: int  # supervisor → worker: end of file means the supervisor is gone

    def report(self, serving: bool) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: control_fd says so too
            os.write(self.status_fd, SERVING_BYTE if serving else NOT_SERVING_BYTE)

    def watch_supervisor(self, stop: Callable[[], None]) -> None:
        """Calls ``stop`` when the supervisor dies (its end of the control pipe closes)."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(self.control_fd, 64)
            except BlockingIOError:
                return
            if not data:
                loop.remove_reader(self.control_fd)
                log.warning("supervisor_gone", worker=self.index)
                stop()

        os.set_blocking(self.control_fd, False)
        loop.add_reader(self.control_fd, readable)


# What a worker runs once forked: build and serve until a signal (or the supervisor's death).
WorkerMain = Callable[[ServerSettings, WorkerLink], Coroutine[Any, Any, None]]


@dataclass
class _Worker:
    index: int
    pid: int
    status_fd: int
    control_fd: int
    serving: bool = False
    exited: bool = False


def worker_metrics_port(base: int | None, index: int) -> int | None:
    """Worker ``index``'s /metrics port: ``base + 100 * index``. Each worker keeps its own
    registry (counters live in its process), so each serves its own endpoint and Prometheus
    scrapes every one; a shared fixed port would make the second worker fail to start. Steps of
    100 follow the ports' own layout (5005x service, +100 peer, +200 health, +300 metrics), so
    worker 1 of encryptsvc (50453) meets no other service's default port. 0 stays ephemeral."""
    if not base:
        return base
    return base + WORKER_METRICS_STEP * index


def run_workers(
    settings: ServerSettings,
    count: int,
    worker_main: WorkerMain,
    service_names: Sequence[str] = (),
) -> int:
    """Forks ``count`` workers serving ``settings``' ports; returns the exit code.

    ``service_names`` are the full names the health port answers for, besides "".
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    # The ports are fixed before the fork, so port 0 (tests) means one shared ephemeral port.
    held = [reserve_port(settings.host, settings.port)]
    port = held[0].getsockname()[1]
    held.append(reserve_port(settings.host, settings.peer_port))
    peer_port = held[1].getsockname()[1]
    # SO_REUSEPORT on deliberately, for these ports of these workers only; the supervisor
    # serves the health port.
    worker_settings = replace(
        settings, port=port, peer_port=peer_port, health_port=None, reuse_port=True
    )
    workers: list[_Worker] = []
    for index in range(count):
        status_r, status_w = os.pipe()
        control_r, control_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sock in held:
                    sock.close()
                for other in workers:  # pipes of earlier siblings are not ours
                    os.close(other.status_fd)
                    os.close(other.control_fd)
                os.close(status_r)
                os.close(control_w)
                _name_worker(index)
                link = WorkerLink(index, status_w, control_r)
                own = replace(
                    worker_settings, metrics_port=worker_metrics_port(settings.metrics_port, index)
                )
                with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
                    runner.run(worker_main(own, link))
                code = 0
            except KeyboardInterrupt:
                code = 0
            except BaseException as exc:
                print(f"{settings.service} worker {index}: {exc!r}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(status_w)
        os.close(control_r)
        workers.append(_Worker(index, pid, status_r, control_w))
        log.info("worker_started", service=settings.service, worker=index, pid=pid)
    try:
        return asyncio.run(_supervise(settings, port, peer_port, workers, service_names))
    finally:
        for sock in held:
            sock.close()


def loop_factory(settings: ServerSettings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the settings ask for (None: asyncio's default)."""
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError(
                "PHISEAL_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)"
            ) from None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None


def _name_worker(index: int) -> None:
    """Every log line of a worker names it (bound below the per-call context the interceptor
    clears, so it survives every RPC)."""
    config = structlog.get_config()
    processors = list(config["processors"])

    def add_worker(_: Any, __: str, event_dict: Any) -> Any:
        event_dict.setdefault("worker", index)
        return event_dict

    processors.insert(0, add_worker)
    structlog.configure(processors=processors)


async def _supervise(
    settings: ServerSettings,
    port: int,
    peer_port: int,
    workers: list[_Worker],
    service_names: Sequence[str],
) -> int:
    # Only now, with every worker forked, may this process create gRPC objects.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer
    from grpc_reflection.v1alpha import reflection

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    exit_code = 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    health = HealthServicer()
    names = ["", *service_names]
    health_server: grpc.aio.Server | None = None
    health_port = 0
    if settings.health_port is not None:
        health_server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", 4096), ("grpc.so_reuseport", 0)]
        )
        health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
        reflection.enable_server_reflection(
            [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            health_server,
        )
        health_port = health_server.add_insecure_port(f"{settings.host}:{settings.health_port}")
        await health_server.start()
    serving = False

    async def publish() -> None:
        nonlocal serving
        now = all(w.serving for w in workers) and not stop.is_set()
        if now != serving:
            serving = now
            status = health_pb2.HealthCheckResponse
            for name in names:
                await health.set(name, status.SERVING if now else status.NOT_SERVING)
            log.info("workers_health", serving=now, workers=len(workers))

    for name in names:
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    changed = asyncio.Event()

    def on_status(worker: _Worker) -> None:
        try:
            data = os.read(worker.status_fd, 256)
        except BlockingIOError:
            return
        if not data:  # the worker closed its end: it has exited
            loop.remove_reader(worker.status_fd)
            worker.exited = True
            worker.serving = False
            if not stop.is_set():
                log.error("worker_exited", worker=worker.index, pid=worker.pid)
                nonlocal exit_code
                exit_code = 1
                stop.set()
        else:
            worker.serving = data[-1:] == SERVING_BYTE
        changed.set()

    for worker in workers:
        os.set_blocking(worker.status_fd, False)
        loop.add_reader(worker.status_fd, on_status, worker)

    log.info(
        "workers_serving",
        service=settings.service,
        workers=len(workers),
        address=f"{settings.host}:{port}",
        peer_port=peer_port or None,
        health_port=health_port or None,
    )
    stopper = asyncio.create_task(stop.wait())
    while not stop.is_set():
        waiter = asyncio.create_task(changed.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        changed.clear()
        await publish()

    # Shutdown: NOT_SERVING first, so balancers stop sending, then drain every worker.
    log.info("workers_stopping", service=settings.service, grace=settings.grace_seconds)
    await publish()
    await health.enter_graceful_shutdown()
    for worker in workers:
        if not worker.exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
    deadline = settings.grace_seconds + _EXIT_MARGIN_SECONDS
    codes = await asyncio.gather(*(_reap(w, deadline) for w in workers))
    for worker in workers:
        with contextlib.suppress(ValueError):
            loop.remove_reader(worker.status_fd)
        os.close(worker.status_fd)
        os.close(worker.control_fd)
    if health_server is not None:
        await health_server.stop(0)
    if any(code != 0 for code in codes):
        exit_code = exit_code or 1
    log.info("workers_stopped", service=settings.service, codes=codes)
    return exit_code


async def _reap(worker: _Worker, within: float) -> int:
    """Waits for the worker to exit (SIGKILL after ``within`` seconds); its exit status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        pid, status = os.waitpid(worker.pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
        if pid != 0:
            return os.waitstatus_to_exitcode(status)
        if loop.time() >= deadline:
            log.error("worker_killed", worker=worker.index, pid=worker.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            _, status = await asyncio.to_thread(os.waitpid, worker.pid, 0)
            return os.waitstatus_to_exitcode(status)
        await asyncio.sleep(0.05)
