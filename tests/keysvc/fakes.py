"""In-memory stand-ins for keysvc's KeyStore and DestinationDirectory (test_key_store_contract
keeps the store equal to PgKeyStore)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime

from services.common.audit import AuditEntry
from services.common.errors import Aborted, NotFound, Unavailable
from services.keysvc.keys import Destination, KeyChange, KeyState, KeyVersion, StoredVersion


class FakeKeyTransaction:
    """One destination's versions as a private copy; the store keeps it only on commit."""

    def __init__(self, destination_id: str, rows: dict[int, StoredVersion]) -> None:
        self._destination_id = destination_id
        self.rows = dict(rows)
        self.audits: list[AuditEntry] = []
        self.changes: list[KeyChange] = []

    async def versions(self) -> list[StoredVersion]:
        return [self.rows[v] for v in sorted(self.rows, reverse=True)]

    async def insert(
        self, key: KeyVersion, request_hash: bytes | None, challenge_hash: bytes | None
    ) -> None:
        # The table's unique indexes: one row per version, one active, one pending, and one
        # version per request id. PgKeyStore maps their violation to Aborted.
        clash = key.version in self.rows or any(
            (key.state is s.key.state and key.state in (KeyState.ACTIVE, KeyState.PENDING))
            or (request_hash is not None and s.request_hash == request_hash)
            for s in self.rows.values()
        )
        if clash:
            raise Aborted(
                f"a concurrent change to destination {key.destination_id}'s keys won; "
                "read the key versions and retry"
            )
        self.rows[key.version] = StoredVersion(key, request_hash, challenge_hash)
        self.changes.append(KeyChange(key.destination_id, key.version, key.state))

    async def set_state(self, version: int, state: KeyState, at: datetime) -> None:
        stored = self.rows.get(version)
        if stored is not None:
            key = replace(stored.key, state=state)
            if state is KeyState.ACTIVE:
                key = replace(key, activated_at=at)
            elif state is KeyState.RETIRED:
                key = replace(key, retired_at=at)
            self.rows[version] = replace(stored, key=key)
        # PostgreSQL notifies even when the UPDATE matched no row; so does the fake.
        self.changes.append(KeyChange(self._destination_id, version, state))

    async def audit(self, entry: AuditEntry) -> None:
        # append_to_outbox: an entry auditsvc would refuse fails the block (InvalidArgument).
        entry.check("keysvc")
        self.audits.append(entry)


class FakeKeyStore:
    """KeyStore in memory: a transaction's rows, outbox entries and announcements are kept
    only when its block succeeds; ``locked`` serialises per destination as the advisory lock
    does."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, StoredVersion]] = {}
        self.outbox: list[AuditEntry] = []
        self.announced: list[KeyChange] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self.waiting = 0  # blocks waiting for a destination's lock (the contract suite asks)

    @asynccontextmanager
    async def locked(self, destination_id: str) -> AsyncIterator[FakeKeyTransaction]:
        lock = self._locks.setdefault(destination_id, asyncio.Lock())
        self.waiting += 1
        try:
            await lock.acquire()
        finally:
            self.waiting -= 1
        try:
            async with self.reading(destination_id) as tx:
                yield tx
        finally:
            lock.release()

    @asynccontextmanager
    async def reading(self, destination_id: str) -> AsyncIterator[FakeKeyTransaction]:
        tx = FakeKeyTransaction(destination_id, self.rows.get(destination_id, {}))
        yield tx
        # Reached only when the block raised nothing: the commit.
        if tx.rows:
            self.rows[destination_id] = tx.rows
        self.outbox += tx.audits
        self.announced += tx.changes

    async def expire_due(
        self, now: datetime, audit: Callable[[KeyVersion], AuditEntry]
    ) -> list[KeyVersion]:
        due = [
            (destination_id, version, stored, replace(stored.key, state=KeyState.EXPIRED))
            for destination_id, rows in self.rows.items()
            for version, stored in rows.items()
            if stored.key.state is KeyState.PENDING
            and stored.key.confirm_by
            and stored.key.confirm_by <= now
        ]
        # One transaction: every entry is checked (as append_to_outbox does) before any commits.
        entries = [audit(key) for *_, key in due]
        for entry in entries:
            entry.check("keysvc")
        for (destination_id, version, stored, key), entry in zip(due, entries, strict=True):
            self.rows[destination_id][version] = replace(stored, key=key)
            self.outbox.append(entry)
            self.announced.append(KeyChange(destination_id, version, key.state))
        return [key for *_, key in due]


class FakeDirectory:
    """policysvc's answers about destinations: known ones, in their workspaces, or down."""

    def __init__(self, known: dict[str, str] | None = None, *, down: bool = False) -> None:
        self.known = dict(known or {})
        self.down = down

    async def get(self, destination_id: str) -> Destination:
        if self.down:
            raise Unavailable("policysvc is unreachable")
        workspace_id = self.known.get(destination_id)
        if workspace_id is None:
            raise NotFound(f"destination {destination_id} does not exist")
        return Destination(destination_id, workspace_id)
