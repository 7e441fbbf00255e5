"""Start-up helpers every composition root uses: the database, logging, the main loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import asyncpg

from services.common.config import ConfigError, ServerSettings
from services.common.db import MigrationSource, connect_with_retry, create_pool, migrate
from services.common.errors import DomainError
from services.common.logging import configure_logging
from services.common.server import GrpcServer, run_until_signal


async def open_database(
    settings: ServerSettings, schema: str, sources: Sequence[MigrationSource]
) -> asyncpg.Pool:
    """Waits for PostgreSQL, applies pending migrations to ``schema``, returns the pool."""
    url = settings.require_database()
    con = await connect_with_retry(url, settings.db_connect_timeout)
    try:
        await migrate(con, schema, sources)
    finally:
        await con.close()
    return await create_pool(
        url,
        schema=schema,
        application=settings.service,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
    )


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
