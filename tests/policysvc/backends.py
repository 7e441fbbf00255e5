"""The two implementations of policysvc's stores the contract suites run against, and seeds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from phiseal_dev.dbroles import runtime_url
from phiseal_dev.testing import PgCluster, eventually
from services.common.audit import AuditEntry
from services.common.data.db import create_pool, runtime_role
from services.common.errors import ResourceExhausted
from services.policysvc import store as pg
from services.policysvc.catalog import (
    CatalogStore,
    Destination,
    DestinationType,
    Workspace,
)
from services.policysvc.policy import PolicyStore, parse_change
from services.policysvc.privacy import PrivacyStore
from tests.policysvc.fakes import FakePolicyDatabase

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Backend:
    """The three stores over one database, its outbox and its announcements."""

    catalog: CatalogStore
    privacy: PrivacyStore
    policy: PolicyStore
    outbox: Callable[[], Any]  # async () -> list[str]: event types, oldest first
    heard: Callable[[], list[tuple[str, int]]]

    async def announced(self, count: int) -> list[tuple[str, int]]:
        """The announcements once ``count`` arrived (PostgreSQL delivers them after commit)."""
        await eventually(lambda: len(self.heard()) >= count, timeout=10)
        return self.heard()


def entry(event_type: str, workspace_id: str = "ws_1") -> AuditEntry:
    return AuditEntry(
        event_type=event_type,
        workspace_id=workspace_id,
        target=workspace_id,
        actor_user_id="alice",
        request_id="req-1",
    )


def allow(count: int) -> None:
    """A cap check that accepts any count."""


def refuse_past(cap: int) -> Callable[[int], None]:
    """A cap check refusing, as caps.py's do, a count above ``cap``."""

    def check(count: int) -> None:
        if count > cap:
            raise ResourceExhausted(f"{count} is past the cap of {cap}")

    return check


def workspace(workspace_id: str = "ws_1") -> Workspace:
    return Workspace(workspace_id, f"Clinic {workspace_id}", T0, "alice")


def destination(
    destination_id: str = "dst_1",
    workspace_id: str = "ws_1",
    name: str = "",
    type_: DestinationType = DestinationType.EVENT_STREAM_CLOUD_MODE,
) -> Destination:
    return Destination(destination_id, workspace_id, name or destination_id, type_, T0, "alice")


async def seed(backend: Backend, *destinations: Destination) -> None:
    """ws_1 and the destinations (in ws_1 unless they say otherwise), audited as created."""
    for ws in sorted({"ws_1", *(d.workspace_id for d in destinations)}):
        await backend.catalog.insert_workspace(workspace(ws), entry("Workspace Created", ws))
    for d in destinations:
        await backend.catalog.insert_destination(d, entry("Destination Created", d.workspace_id))


async def _fake() -> AsyncIterator[Backend]:
    db = FakePolicyDatabase()

    async def outbox() -> list[str]:
        return [e.event_type for e in db.outbox]

    yield Backend(db.catalog(), db.privacy(), db.policy(), outbox, lambda: list(db.announced))


async def _postgres(url: str) -> AsyncIterator[Backend]:
    pool = await create_pool(
        runtime_url(url, "policysvc"),
        schema=pg.SCHEMA,
        application="contract",
        role=runtime_role(pg.SCHEMA),
    )
    listener = await asyncpg.connect(url)
    heard: list[tuple[str, int]] = []

    def on_notify(*args: Any) -> None:
        change = parse_change(args[3])
        assert change is not None
        heard.append(change)

    await listener.add_listener(pg.CHANGES_CHANNEL, on_notify)

    async def outbox() -> list[str]:
        rows = await pool.fetch("SELECT event FROM audit_outbox ORDER BY seq")
        return [orjson.loads(r["event"])["event_type"] for r in rows]

    try:
        yield Backend(
            pg.CatalogStore(pool),
            pg.PrivacyStore(pool),
            pg.PolicyStore(pool, pg.CHANGES_CHANNEL),
            outbox,
            lambda: list(heard),
        )
    finally:
        await listener.close()
        await pool.close()


@pytest_asyncio.fixture(params=["fake", "postgres"])
async def backend(
    request: pytest.FixtureRequest, pg_cluster: PgCluster, shared_database: str
) -> AsyncIterator[Backend]:
    """The fakes, or the PostgreSQL stores on the shared database with the schema emptied,
    connected as policysvc runs: its own login in the runtime role, which owns nothing."""
    if request.param == "fake":
        async for made in _fake():
            yield made
        return
    await pg_cluster.empty_schema(shared_database, pg.SCHEMA)
    async for made in _postgres(shared_database):
        yield made
