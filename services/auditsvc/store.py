"""auditsvc persistence: asyncpg SQL against the `auditsvc` schema."""

from __future__ import annotations

from pathlib import Path

from services.common.db import MigrationSource

SCHEMA = "auditsvc"
MIGRATIONS = (MigrationSource("auditsvc", Path(__file__).parent / "migrations"),)
