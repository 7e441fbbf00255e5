"""Session-wide PostgreSQL, a fresh database per test, and in-process services."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

# Tests fork PostgreSQL tools (pg_dump, pg_ctl) from processes with busy in-process gRPC
# servers; grpc's fork handlers then abort the child now and again. Nothing here forks to run
# gRPC in a child, so the handlers are turned off before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest
import pytest_asyncio
import structlog

from phiseal_dev.testing import PgCluster, RunningService, start_service
from services.common.server.logging import configure_logging

StartService = Callable[..., Awaitable[RunningService]]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL for the session: private unless DATABASE_URL or PGHOST is set."""
    cluster = PgCluster.start()
    asyncio.run(cluster.build_template())
    yield cluster
    cluster.stop()


@pytest_asyncio.fixture
async def database_url(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A fresh database with every service's migrations applied."""
    url = await pg_cluster.create_database()
    yield url
    await pg_cluster.drop_database(url)


@pytest_asyncio.fixture(scope="session")
async def shared_database(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """One database for the store contract suites, which empty their schema per test
    (``PgCluster.empty_schema``) instead of paying for a fresh database each time."""
    url = await pg_cluster.create_database()
    yield url
    await pg_cluster.drop_database(url)


@pytest_asyncio.fixture
async def start(database_url: str) -> AsyncIterator[StartService]:
    """Factory: ``await start("keysvc", KEY="value")`` serves a service on an ephemeral port."""
    running: list[RunningService] = []

    async def _start(name: str, db: str | None = None, **overrides: str) -> RunningService:
        service = await start_service(name, db or database_url, overrides)
        running.append(service)
        return service

    yield _start
    for service in reversed(running):
        await service.stop()


@pytest.fixture(autouse=True)
def _json_logs() -> Iterator[None]:
    configure_logging("info", "json")
    yield
    structlog.contextvars.clear_contextvars()
