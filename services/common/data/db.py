"""The asyncpg pool, the migration runner (plain SQL files, one schema per service), and the
least-privilege check: a service runs as a role that owns nothing.

Two database roles per deployment (docs/database-roles.md): an *owner* that runs migrations
(``python -m services.migrate`` with DATABASE_OWNER_URL) and owns every table, and per service a
*runtime* login (DATABASE_URL) that is a member of the service's group role
(``phiseal_<schema>_runtime``, auditsvc's ``phiseal_audit_writer``) and holds only the grants
the migrations give that group. A service never holds the owner's credentials: at start-up it
refuses to run as a superuser or as a role that owns (or may become the owner of) anything in
its schema, and refuses a schema with migrations still pending.
"""

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
from services.common.server.config import ConfigError, ServerSettings

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


def runtime_role(schema: str) -> str:
    """The group role a service's login belongs to, granted what its migrations grant."""
    return f"phiseal_{schema}_runtime"


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

    ``role`` as a start-up setting (not ``SET ROLE``) survives the ``RESET ALL`` asyncpg runs
    when a connection returns to the pool: every statement runs with only that role's grants.
    """
    settings = {"search_path": schema, "application_name": application}
    if role is not None:
        settings["role"] = role
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings=settings,
        # A connection stuck behind a dead server must not hang an RPC forever.
        command_timeout=30,
    )
    assert pool is not None
    return pool


class PrivilegeError(ConfigError):
    """The service's database role may do more than the service needs; the message says how
    to set the roles up."""


# Owners of the schema and of everything in it that the login could act as.
_OWNED = """
SELECT count(*) FROM (
    SELECT nspowner AS owner FROM pg_namespace WHERE oid = $1::regnamespace
    UNION ALL SELECT relowner FROM pg_class WHERE relnamespace = $1::regnamespace
    UNION ALL SELECT proowner FROM pg_proc WHERE pronamespace = $1::regnamespace
    UNION ALL SELECT typowner FROM pg_type WHERE typnamespace = $1::regnamespace
) AS o
WHERE pg_has_role(session_user, o.owner, 'MEMBER')
"""


async def check_runtime_role(
    con: asyncpg.Connection, schema: str, role: str, sources: Sequence[MigrationSource]
) -> None:
    """Raises PrivilegeError unless ``con`` runs as a role that owns nothing in ``schema``,
    belongs to ``role``, and finds every migration in ``sources`` applied."""
    me = await con.fetchrow(
        "SELECT session_user AS name, rolsuper FROM pg_roles WHERE rolname = session_user"
    )
    assert me is not None
    user, superuser = me["name"], me["rolsuper"]
    fix = (
        f"DATABASE_URL must name a login that owns nothing and is a member of {role}; "
        "migrations run separately as the owner (python -m services.migrate with "
        "DATABASE_OWNER_URL) — see docs/database-roles.md"
    )
    if superuser:
        raise PrivilegeError(f"DATABASE_URL connects as superuser {user}: {fix}")
    if await con.fetchval("SELECT to_regnamespace($1)", schema) is None:
        raise PrivilegeError(f"schema {schema} does not exist: run the migrations first. {fix}")
    if await con.fetchval(_OWNED, schema):
        raise PrivilegeError(f"DATABASE_URL's role {user} owns objects in schema {schema}: {fix}")
    if not await con.fetchval(
        "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1) "
        "AND pg_has_role(session_user, $1, 'MEMBER')",
        role,
    ):
        raise PrivilegeError(f"DATABASE_URL's role {user} is not a member of {role}: {fix}")
    applied = {
        row["id"]: row["checksum"]
        # The schema name is the service's constant, never input.
        for row in await con.fetch(f'SELECT id, checksum FROM "{schema}".schema_migrations')  # noqa: S608
    }
    pending = [
        migration_id
        for source in sources
        for migration_id, sql in source.files()
        if applied.get(migration_id) != hashlib.sha256(sql.encode()).hexdigest()
    ]
    if pending:
        raise PrivilegeError(
            f"schema {schema} lacks migration {pending[0]} ({len(pending)} pending or changed): "
            "run python -m services.migrate as the owner (DATABASE_OWNER_URL) first"
        )


async def open_database(
    settings: ServerSettings,
    schema: str,
    sources: Sequence[MigrationSource],
    *,
    role: str | None = None,
) -> asyncpg.Pool:
    """Waits for PostgreSQL, checks the least-privilege set-up, returns the pool.

    Every connection runs as ``role`` (default ``runtime_role(schema)``). Migrations are not
    applied here: the running service never holds the owner's credentials.
    """
    url = settings.require_database()
    group = role or runtime_role(schema)
    con = await connect_with_retry(url, settings.db_connect_timeout)
    try:
        await check_runtime_role(con, schema, group, sources)
    finally:
        await con.close()
    return await create_pool(
        url,
        schema=schema,
        application=settings.service,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        role=group,
    )
