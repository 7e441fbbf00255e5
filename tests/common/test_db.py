"""open_database: the pool runs as the service's group role; the login must own nothing and
find every migration applied (they run separately, as the owner)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phiseal_dev.dbroles import runtime_url
from services.auditsvc.store import MIGRATIONS, RUNTIME_ROLE, SCHEMA
from services.common.data.db import MigrationSource, PrivilegeError, open_database
from services.common.server.config import Env, ServerSettings
from services.keysvc import store as keystore


def settings(database_url: str, service: str = "auditsvc") -> ServerSettings:
    return ServerSettings.from_env(service, 0, Env({"DATABASE_URL": database_url}))


async def test_pool_runs_as_the_role_it_was_given(database_url: str) -> None:
    """With ``role``, every pooled connection is that role, in the service's schema."""
    url = runtime_url(database_url, "auditsvc")
    pool = await open_database(settings(url), SCHEMA, MIGRATIONS, role=RUNTIME_ROLE)
    try:
        async with pool.acquire() as con:
            row = await con.fetchrow("SELECT current_user, session_user, current_schema()")
    finally:
        await pool.close()
    assert row is not None
    assert (row[0], row[1], row[2]) == (RUNTIME_ROLE, "phiseal_auditsvc", SCHEMA)


async def test_pool_runs_as_the_schema_runtime_role_by_default(database_url: str) -> None:
    """Without ``role``, connections run as ``phiseal_<schema>_runtime``."""
    url = runtime_url(database_url, "keysvc")
    pool = await open_database(settings(url, "keysvc"), keystore.SCHEMA, keystore.MIGRATIONS)
    try:
        async with pool.acquire() as con:
            user = await con.fetchval("SELECT current_user")
    finally:
        await pool.close()
    assert user == "phiseal_keysvc_runtime"


async def test_a_pending_migration_stops_start_up(database_url: str, tmp_path: Path) -> None:
    """A migration the owner has not applied yet is named; the service does not apply it."""
    (tmp_path / "9999_next.sql").write_text("SELECT 1;")
    sources = (*MIGRATIONS, MigrationSource("auditsvc", tmp_path))
    url = runtime_url(database_url, "auditsvc")
    with pytest.raises(PrivilegeError, match=r"auditsvc/9999_next\.sql"):
        await open_database(settings(url), SCHEMA, sources, role=RUNTIME_ROLE)
