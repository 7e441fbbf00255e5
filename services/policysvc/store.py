"""policysvc persistence: asyncpg SQL against the `policysvc` schema."""

from __future__ import annotations

from pathlib import Path

from services.common.db import COMMON_MIGRATIONS, MigrationSource

SCHEMA = "policysvc"
MIGRATIONS = (
    MigrationSource("common", COMMON_MIGRATIONS),
    MigrationSource("policysvc", Path(__file__).parent / "migrations"),
)
