"""Start-up helpers every composition root uses: the database, logging, the main loop."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from services.common.errors import DomainError
from services.common.server.config import ConfigError, ServerSettings
from services.common.server.grpc_server import GrpcServer, run_until_signal
from services.common.server.logging import configure_logging
from services.common.server.workers import WorkerLink, loop_factory, run_workers


class HasServerSettings(Protocol):
    @property
    def server(self) -> ServerSettings: ...


S = TypeVar("S", bound=HasServerSettings)


def run_service(
    name: str,
    load_settings: Callable[[], S],
    build: Callable[[S], Awaitable[GrpcServer]],
    *,
    workers: Callable[[S], int] | None = None,
    service_names: Sequence[str] = (),
) -> None:
    """``python -m services.<name>``: parse settings, build, serve until SIGTERM/SIGINT.

    With ``workers`` answering more than 1, that many forked worker processes serve the same
    ports (services.common.server.workers); ``service_names`` are what their joint health
    port answers for. ``settings`` must then be a dataclass with a ``server`` field.
    """
    try:
        settings = load_settings()
        factory = loop_factory(settings.server)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.server.log_level, settings.server.log_format)
    count = workers(settings) if workers is not None else 1
    if count > 1:

        async def worker_main(server_settings: ServerSettings, link: WorkerLink) -> None:
            own: Any = dataclasses.replace(settings, server=server_settings)  # type: ignore[type-var]
            server = await build(own)
            server.monitor.subscribe(link.report)
            await run_until_signal(server, also_stop_when=link.watch_supervisor)

        try:
            code = run_workers(settings.server, count, worker_main, service_names)
        except ConfigError as exc:
            print(f"{name}: cannot start: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        raise SystemExit(code)

    async def main() -> None:
        server = await build(settings)
        await run_until_signal(server)

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    except (ConfigError, DomainError) as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
