"""Start-up helpers every composition root uses: the database, logging, the main loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from services.common.errors import DomainError
from services.common.server.config import ConfigError, ServerSettings
from services.common.server.grpc_server import GrpcServer, run_until_signal
from services.common.server.logging import configure_logging


class HasServerSettings(Protocol):
    @property
    def server(self) -> ServerSettings: ...


S = TypeVar("S", bound=HasServerSettings)


def run_service(
    name: str,
    load_settings: Callable[[], S],
    build: Callable[[S], Awaitable[GrpcServer]],
) -> None:
    """``python -m services.<name>``: parse settings, build, serve until SIGTERM/SIGINT."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.server.log_level, settings.server.log_format)

    async def main() -> None:
        server = await build(settings)
        await run_until_signal(server)

    try:
        asyncio.run(main())
    except (ConfigError, DomainError) as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
