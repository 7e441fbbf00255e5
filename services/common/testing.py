"""Test and benchmark helpers: a PostgreSQL per session, a database per test, in-process servers.

asyncpg's own test base does the same: one cluster per session (a private one unless
DATABASE_URL or PGHOST points at a server), migrations once into a template database, and a
fresh copy of the template for each test.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc

from services.common.db import migrate
from services.common.localpg import LocalPostgres
from services.common.server import GrpcServer

DB_SERVICES = ("keysvc", "policysvc", "auditsvc")
ALL_SERVICES = ("keysvc", "policysvc", "encryptsvc", "auditsvc")


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@dataclass
class PgCluster:
    """The PostgreSQL server for a test session."""

    admin_url: str
    local: LocalPostgres | None = None
    template: str = ""

    @classmethod
    def start(cls) -> PgCluster:
        url = os.environ.get("DATABASE_URL")
        if not url and os.environ.get("PGHOST"):
            url = "postgresql:///postgres"  # libpq-style: asyncpg reads PG* variables
        if url:
            return cls(admin_url=url)
        tmp = Path(tempfile.mkdtemp(prefix="phiseal-test-pg-"))
        local = LocalPostgres(tmp / "data")
        return cls(admin_url=local.start(), local=local)

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

    async def build_template(self) -> str:
        """A database holding every service's migrations, copied for each test."""
        name = f"phiseal_tpl_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        con = await asyncpg.connect(self.url(name))
        try:
            for service in DB_SERVICES:
                store = importlib.import_module(f"services.{service}.store")
                await migrate(con, store.SCHEMA, store.MIGRATIONS)
        finally:
            await con.close()
        self.template = name
        return name

    async def create_database(self) -> str:
        """A fresh copy of the template; returns its URL."""
        name = f"phiseal_t_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await admin.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    def stop(self) -> None:
        if self.local is not None:
            self.local.destroy()


@dataclass
class RunningService:
    """A service served in-process on 127.0.0.1 with an ephemeral port."""

    name: str
    server: GrpcServer
    settings: Any
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def channel(self) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.address)
        self.channels.append(channel)
        return channel

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close(None)
        await self.server.stop()


def service_env(
    name: str, database_url: str | None, overrides: Mapping[str, str]
) -> dict[str, str]:
    """The environment a service is built from in tests: port 0, short intervals."""
    env = {
        f"{name.upper()}_PORT": "0",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "DB_CHECK_INTERVAL_SECONDS": "0.2",
        "DB_CONNECT_TIMEOUT_SECONDS": "10",
    }
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(overrides)
    return env


async def start_service(
    name: str, database_url: str | None, overrides: Mapping[str, str] | None = None
) -> RunningService:
    """Builds ``services.<name>`` from an explicit environment and starts it."""
    config = importlib.import_module(f"services.{name}.config")
    app = importlib.import_module(f"services.{name}.app")
    settings = config.Settings.from_env(service_env(name, database_url, overrides or {}))
    server: GrpcServer = await app.build(settings)
    await server.start()
    return RunningService(name=name, server=server, settings=settings)
