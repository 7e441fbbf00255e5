"""Least privilege: every service runs as a role that owns nothing (docs/database-roles.md)."""

from __future__ import annotations

import asyncpg
import pytest

from phiseal_dev.dbroles import runtime_url
from services.common.data.db import PrivilegeError
from tests.conftest import StartService


@pytest.mark.parametrize("service", ["keysvc", "policysvc", "auditsvc"])
async def test_a_service_refuses_to_run_as_a_superuser(
    start: StartService, database_url: str, service: str
) -> None:
    """Given a superuser's DATABASE_URL, start-up stops with a message naming the fix."""
    with pytest.raises(PrivilegeError, match="superuser"):
        await start(service, DATABASE_URL=database_url)


@pytest.mark.parametrize(
    ("service", "sql"),
    [
        ("keysvc", "DROP TABLE keysvc.key_versions"),
        ("keysvc", "ALTER TABLE keysvc.audit_outbox DISABLE TRIGGER ALL"),
        ("policysvc", "ALTER TABLE policysvc.workspaces ADD COLUMN x int"),
        ("policysvc", "DELETE FROM policysvc.schema_migrations"),
        ("policysvc", "CREATE TABLE policysvc.shadow (x int)"),
    ],
)
async def test_runtime_roles_have_no_ddl(database_url: str, service: str, sql: str) -> None:
    """keysvc's and policysvc's runtime logins cannot change their schema or the ledger."""
    con = await asyncpg.connect(runtime_url(database_url, service))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await con.execute(sql)
    finally:
        await con.close()
