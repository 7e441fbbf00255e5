"""Migrations: applied once, recorded, re-runnable, and guarded against edits."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.common.data.db import MigrationError, MigrationSource, migrate


def source(
    tmp_path: Path, body: str = "CREATE TABLE widgets (id int PRIMARY KEY);"
) -> MigrationSource:
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    (folder / "0001_widgets.sql").write_text(body)
    (folder / "0002_more.sql").write_text("ALTER TABLE widgets ADD COLUMN name text;")
    return MigrationSource("demo", folder)


async def test_migrations_apply_once_and_rerun_as_no_ops(database_url: str, tmp_path: Path) -> None:
    """The first run applies every file in its schema; the second applies nothing."""
    con = await asyncpg.connect(database_url)
    try:
        first = await migrate(con, "demo", [source(tmp_path)])
        second = await migrate(con, "demo", [source(tmp_path)])
        ledger = await con.fetch("SELECT id FROM demo.schema_migrations ORDER BY id")
        columns = await con.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'demo' AND table_name = 'widgets' ORDER BY column_name"
        )
    finally:
        await con.close()
    assert (first, second) == (2, 0)
    assert [r["id"] for r in ledger] == ["demo/0001_widgets.sql", "demo/0002_more.sql"]
    assert [r["column_name"] for r in columns] == ["id", "name"]


async def test_editing_an_applied_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    """A changed file that was already applied stops start-up with a message naming it."""
    con = await asyncpg.connect(database_url)
    try:
        await migrate(con, "demo", [source(tmp_path)])
        edited = source(tmp_path, "CREATE TABLE widgets (id bigint PRIMARY KEY);")
        with pytest.raises(MigrationError, match=r"demo/0001_widgets\.sql"):
            await migrate(con, "demo", [edited])
    finally:
        await con.close()


async def test_each_service_owns_its_schema(database_url: str) -> None:
    """The template holds one schema per database-backed service, each with its ledger."""
    con = await asyncpg.connect(database_url)
    try:
        rows = await con.fetch(
            "SELECT table_schema FROM information_schema.tables "
            "WHERE table_name = 'schema_migrations' ORDER BY table_schema"
        )
    finally:
        await con.close()
    assert [r["table_schema"] for r in rows] == ["auditsvc", "keysvc", "policysvc"]
