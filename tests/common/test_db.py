"""open_database: migrations as the URL's user, the pool's connections as the role asked for."""

from __future__ import annotations

import asyncpg

from services.auditsvc.store import MIGRATIONS, SCHEMA, WRITER_ROLE
from services.common.data.db import open_database
from services.common.server.config import Env, ServerSettings


def settings(database_url: str) -> ServerSettings:
    return ServerSettings.from_env("auditsvc", 0, Env({"DATABASE_URL": database_url}))


async def test_pool_runs_as_the_role_it_was_given(database_url: str) -> None:
    """With ``role``, every pooled connection is that role, in the service's schema."""
    pool = await open_database(settings(database_url), SCHEMA, MIGRATIONS, role=WRITER_ROLE)
    try:
        async with pool.acquire() as con:
            row = await con.fetchrow("SELECT current_user, current_schema()")
    finally:
        await pool.close()
    assert row is not None
    assert (row[0], row[1]) == (WRITER_ROLE, SCHEMA)


async def test_pool_runs_as_the_url_user_without_a_role(database_url: str) -> None:
    """Without ``role``, pooled connections are the URL's own user."""
    con = await asyncpg.connect(database_url)
    try:
        url_user = await con.fetchval("SELECT current_user")
    finally:
        await con.close()
    pool = await open_database(settings(database_url), SCHEMA, MIGRATIONS)
    try:
        async with pool.acquire() as pooled:
            user = await pooled.fetchval("SELECT current_user")
    finally:
        await pool.close()
    assert user == url_user
