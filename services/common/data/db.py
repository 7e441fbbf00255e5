"""The asyncpg pool and the migration runner (plain SQL files, one schema per service)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from services.common.errors import Unavailable
from services.common.server.config import ServerSettings

log = structlog.get_logger("db")

COMMON_MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class MigrationSource:
    """A folder of ``NNNN_name.sql`` files applied in name order under ``prefix/``."""

    prefix: str
    folder: Path

    def files(self) -> list[tuple[str, str]]:
        return [
            (f"{self.prefix}/{path.name}", path.read_text(encoding="utf-8"))
            for path in sorted(self.folder.glob("*.sql"))
        ]


class MigrationError(Exception):
    """A recorded migration's file was edited after it was applied."""


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    id          text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(con: asyncpg.Connection, schema: str, sources: Sequence[MigrationSource]) -> int:
    """Applies what has not been applied yet to ``schema``; returns how many files ran.

    Replicas starting together serialise on an advisory lock, so each file runs exactly once.
    Each file runs in its own transaction with ``search_path`` set to the schema, so the SQL
    never names its schema.
    """
    lock_key = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)
    await con.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await con.execute(f'SET search_path TO "{schema}"')
        await con.execute(_CREATE_LEDGER)
        applied = {
            row["id"]: row["checksum"]
            for row in await con.fetch("SELECT id, checksum FROM schema_migrations")
        }
        count = 0
        for source in sources:
            for migration_id, sql in source.files():
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if migration_id in applied:
                    if applied[migration_id] != checksum:
                        raise MigrationError(
                            f"migration {migration_id} changed after it was applied to "
                            f"schema {schema}; add a new migration instead of editing it"
                        )
                    continue
                async with con.transaction():
                    await con.execute(sql)
                    await con.execute(
                        "INSERT INTO schema_migrations (id, checksum) VALUES ($1, $2)",
                        migration_id,
                        checksum,
                    )
                log.info("migration_applied", schema=schema, migration=migration_id)
                count += 1
        return count
    finally:
        await con.execute("RESET search_path")
        await con.execute("SELECT pg_advisory_unlock($1)", lock_key)


async def connect_with_retry(
    url: str,
    timeout: float,  # noqa: ASYNC109 - a start-up budget, not one call's deadline
) -> asyncpg.Connection:
    """One connection, retried until ``timeout`` (the database may still be starting)."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await asyncpg.connect(url, timeout=max(0.5, min(5.0, timeout)))
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"cannot reach PostgreSQL at DATABASE_URL within {timeout:.0f}s "
                    f"({type(exc).__name__}); is it running?"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def create_pool(
    url: str,
    *,
    schema: str,
    application: str,
    min_size: int = 1,
    max_size: int = 10,
    role: str | None = None,
) -> asyncpg.Pool:
    """One pool per process; every connection's search_path is the service's own schema.

    ``role``: every connection runs as that role instead of the URL's user. A start-up setting
    (not ``SET ROLE``) survives the ``RESET ALL`` asyncpg runs when a connection returns.
    """
    server_settings = {"search_path": schema, "application_name": application}
    if role is not None:
        server_settings["role"] = role
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings=server_settings,
        # A connection stuck behind a dead server must not hang an RPC forever.
        command_timeout=30,
    )
    assert pool is not None
    return pool


async def open_database(
    settings: ServerSettings,
    schema: str,
    sources: Sequence[MigrationSource],
    *,
    role: str | None = None,
) -> asyncpg.Pool:
    """Waits for PostgreSQL, applies pending migrations to ``schema``, returns the pool.

    Migrations run as the URL's user; with ``role`` the pool's connections run as that role.
    """
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
        role=role,
    )
