"""The two kinds of database role, set up for `make run` and the tests as production has them.

An owner login runs the migrations and owns every schema; each service logs in as its own role
that owns nothing and is a member of the group role its migrations grant to
(docs/database-roles.md). Roles are cluster-wide; creating them is idempotent.
"""

from __future__ import annotations

import contextlib
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

OWNER = "phiseal_owner"
# service -> (login, group role the service's migrations grant to)
RUNTIME = {
    "keysvc": ("phiseal_keysvc", "phiseal_keysvc_runtime"),
    "policysvc": ("phiseal_policysvc", "phiseal_policysvc_runtime"),
    "auditsvc": ("phiseal_auditsvc", "phiseal_audit_writer"),
}
# Development only: the local clusters trust loopback; a server that asks gets this.
DEV_PASSWORD = "phiseal-dev-only"


def as_user(url: str, user: str, password: str = DEV_PASSWORD) -> str:
    """``url`` logging in as ``user``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user)}:{quote(password)}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def owner_url(url: str) -> str:
    return as_user(url, OWNER)


def runtime_url(url: str, service: str) -> str:
    """The URL ``service`` runs with (unchanged for a service without a database)."""
    login = RUNTIME.get(service)
    return as_user(url, login[0]) if login else url


async def _create(con: asyncpg.Connection, role: str, login: bool) -> None:
    if await con.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        return
    kind = f"LOGIN PASSWORD '{DEV_PASSWORD}'" if login else "NOLOGIN"
    # Another session may make it meanwhile.
    with contextlib.suppress(asyncpg.DuplicateObjectError):
        await con.execute(f'CREATE ROLE "{role}" {kind}')


async def ensure_roles(admin_url: str, database: str) -> None:
    """The owner and runtime logins and group roles, and the owner's right to create schemas
    in ``database``. ``admin_url`` is a superuser (or CREATEROLE) connection."""
    con = await asyncpg.connect(admin_url)
    try:
        await _create(con, OWNER, login=True)
        for login, group in RUNTIME.values():
            await _create(con, group, login=False)
            await _create(con, login, login=True)
            await con.execute(f'GRANT "{group}" TO "{login}"')
        await con.execute(f'GRANT CREATE, CONNECT ON DATABASE "{database}" TO "{OWNER}"')
    finally:
        await con.close()


async def foreign_schemas(admin_url: str) -> list[str]:
    """PHIseal schemas in this database that the owner role does not own (made before the
    roles existed)."""
    con = await asyncpg.connect(admin_url)
    try:
        rows = await con.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[]) "
            "AND nspowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)",
            list(RUNTIME),
            OWNER,
        )
    finally:
        await con.close()
    return [r["nspname"] for r in rows]
