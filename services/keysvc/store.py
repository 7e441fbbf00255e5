"""keysvc persistence: asyncpg SQL against the `keysvc` schema."""

from __future__ import annotations

from pathlib import Path

from services.common.db import COMMON_MIGRATIONS, MigrationSource

SCHEMA = "keysvc"
MIGRATIONS = (
    MigrationSource("common", COMMON_MIGRATIONS),
    MigrationSource("keysvc", Path(__file__).parent / "migrations"),
)
