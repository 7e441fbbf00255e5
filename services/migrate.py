"""``python -m services.migrate [service ...]``: applies migrations as the owner role.

Reads DATABASE_OWNER_URL (the role that owns every schema; never given to a running service,
which connects with DATABASE_URL as a role that owns nothing: docs/database-roles.md). Run it
before starting new service versions (a Kubernetes Job, or `make run`, which does it itself).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Sequence

from services.common.data.db import connect_with_retry, migrate

DATABASE_SERVICES = ("keysvc", "policysvc", "auditsvc")


async def migrate_all(owner_url: str, services: Sequence[str] = DATABASE_SERVICES) -> int:
    """Applies every pending migration of ``services``; returns how many files ran."""
    con = await connect_with_retry(owner_url, 30.0)
    try:
        count = 0
        for name in services:
            store = importlib.import_module(f"services.{name}.store")
            count += await migrate(con, store.SCHEMA, store.MIGRATIONS)
        return count
    finally:
        await con.close()


def main(argv: Sequence[str] | None = None) -> int:
    services = list(argv if argv is not None else sys.argv[1:]) or list(DATABASE_SERVICES)
    unknown = [s for s in services if s not in DATABASE_SERVICES]
    if unknown:
        print(f"migrate: unknown service {unknown[0]}: use {', '.join(DATABASE_SERVICES)}")
        return 2
    owner_url = os.environ.get("DATABASE_OWNER_URL", "").strip()
    if not owner_url:
        print("migrate: DATABASE_OWNER_URL is not set: point it at the owner role", file=sys.stderr)
        return 2
    count = asyncio.run(migrate_all(owner_url, services))
    print(f"migrate: {count} migrations applied")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
