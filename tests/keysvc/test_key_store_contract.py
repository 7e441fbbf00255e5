"""The KeyStore contract, run against FakeKeyStore and PgKeyStore alike: the fake the domain
tests use cannot drift from the store keysvc runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from phiseal_dev.dbroles import runtime_url
from phiseal_dev.testing import PgCluster, eventually
from services.common.audit import AuditEntry
from services.common.data.db import create_pool, runtime_role
from services.common.errors import Aborted, InvalidArgument
from services.keysvc.crypto import Algorithm
from services.keysvc.keys import KeyChange, KeyOrigin, KeyState, KeyStore, KeyVersion
from services.keysvc.store import CHANGES_CHANNEL, SCHEMA, PgKeyStore
from tests.keysvc.fakes import FakeKeyStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def version(number: int, state: KeyState = KeyState.ACTIVE, dest: str = "dst_1") -> KeyVersion:
    """A key version as the domain builds it (the key material is never parsed here)."""
    pending = state is KeyState.PENDING
    return KeyVersion(
        destination_id=dest,
        workspace_id="ws_1",
        version=number,
        algorithm=Algorithm.X25519,
        state=state,
        origin=KeyOrigin.GENERATED,
        public_key_pem=f"-----BEGIN PUBLIC KEY-----\nv{number}\n-----END PUBLIC KEY-----\n",
        public_key_jwk=f'{{"kid":"{dest}.v{number}"}}',
        fingerprint_sha256=f"{number:064x}",
        created_at=T0,
        created_by="alice",
        activated_at=None if pending else T0,
        confirm_by=T0 + timedelta(hours=1) if pending else None,
    )


def entry(event_type: str) -> AuditEntry:
    return AuditEntry(
        event_type=event_type,
        workspace_id="ws_1",
        target="dst_1",
        actor_user_id="alice",
        request_id="req-1",
    )


@dataclass
class Backend:
    """A store under contract and what it recorded: outbox event types, announcements."""

    store: KeyStore
    outbox: Any  # async () -> list[str]
    announced: Callable[[], list[KeyChange]]
    waiting: Any  # async () -> int: blocks waiting for a destination's lock


async def _fake() -> AsyncIterator[Backend]:
    fake = FakeKeyStore()

    async def outbox() -> list[str]:
        return [e.event_type for e in fake.outbox]

    async def waiting() -> int:
        return fake.waiting

    yield Backend(fake, outbox, lambda: list(fake.announced), waiting)


async def _postgres(database_url: str) -> AsyncIterator[Backend]:
    pool = await create_pool(
        runtime_url(database_url, "keysvc"),
        schema=SCHEMA,
        application="contract",
        role=runtime_role(SCHEMA),
    )
    listener = await asyncpg.connect(database_url)
    heard: list[KeyChange] = []

    def on_notify(*args: Any) -> None:
        change = KeyChange.from_payload(args[3])
        assert change is not None
        heard.append(change)

    await listener.add_listener(CHANGES_CHANNEL, on_notify)

    async def outbox() -> list[str]:
        rows = await pool.fetch("SELECT event FROM audit_outbox ORDER BY seq")
        return [orjson.loads(r["event"])["event_type"] for r in rows]

    async def waiting() -> int:
        sql = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(await pool.fetchval(sql))

    try:
        yield Backend(PgKeyStore(pool), outbox, lambda: list(heard), waiting)
    finally:
        await listener.close()
        await pool.close()


@pytest_asyncio.fixture(params=["fake", "postgres"])
async def backend(
    request: pytest.FixtureRequest, pg_cluster: PgCluster, shared_database: str
) -> AsyncIterator[Backend]:
    """The fake, or PgKeyStore on the shared database with its schema emptied, connected as
    keysvc runs: its own login in the runtime role, which owns nothing."""
    if request.param == "fake":
        async for made in _fake():
            yield made
        return
    await pg_cluster.empty_schema(shared_database, SCHEMA)
    async for made in _postgres(shared_database):
        yield made


async def insert(
    backend: Backend, key: KeyVersion, request_hash: bytes | None, challenge: bytes | None = None
) -> None:
    """One version inserted in a locked block of its own."""
    async with backend.store.locked(key.destination_id) as tx:
        await tx.insert(key, request_hash, challenge)


async def announced(backend: Backend, count: int) -> list[KeyChange]:
    """The announcements once ``count`` arrived (PostgreSQL delivers them asynchronously)."""
    await eventually(lambda: len(backend.announced()) >= count, timeout=10)
    return backend.announced()


async def test_versions_read_back_newest_first_with_every_field(backend: Backend) -> None:
    """What was inserted reads back equal, newest version first, with its hashes."""
    async with backend.store.locked("dst_1") as tx:
        await tx.insert(version(1, KeyState.RETIRED), b"req-1", None)
        await tx.insert(version(2, KeyState.PENDING), None, b"challenge")
        await tx.insert(version(3), b"req-3", None)
    async with backend.store.reading("dst_1") as tx:
        rows = await tx.versions()
    assert [(s.key, s.request_hash, s.challenge_hash) for s in rows] == [
        (version(3), b"req-3", None),
        (version(2, KeyState.PENDING), None, b"challenge"),
        (version(1, KeyState.RETIRED), b"req-1", None),
    ]


async def test_a_destination_sees_only_its_own_versions(backend: Backend) -> None:
    """Versions are per destination: another destination's rows never show."""
    async with backend.store.locked("dst_1") as tx:
        await tx.insert(version(1), None, None)
    async with backend.store.reading("dst_2") as tx:
        assert await tx.versions() == []


async def test_a_block_that_raises_keeps_nothing(backend: Backend) -> None:
    """Rows, outbox entries and announcements of a failed block are all rolled back."""

    async def refused() -> None:
        async with backend.store.locked("dst_1") as tx:
            await tx.insert(version(1), None, None)
            await tx.audit(entry("Destination Encryption Keys Generated"))
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        await refused()
    async with backend.store.locked("dst_1") as tx:
        rows = await tx.versions()
        await tx.insert(version(1, dest="dst_1"), None, None)  # a marker that does commit
    assert (rows, await backend.outbox(), await announced(backend, 1)) == (
        [],
        [],
        [KeyChange("dst_1", 1, KeyState.ACTIVE)],
    )


async def test_commit_keeps_outbox_entries_and_announces_in_order(backend: Backend) -> None:
    """A committed block's audit entries are in the outbox; its changes are announced in the
    order they were made."""
    async with backend.store.locked("dst_1") as tx:
        await tx.insert(version(1), None, None)
        await tx.audit(entry("Destination Encryption Keys Generated"))
    async with backend.store.locked("dst_1") as tx:
        await tx.set_state(1, KeyState.RETIRED, T0)
        await tx.insert(version(2), None, None)
        await tx.audit(entry("Destination Encryption Keys Regenerated"))
    expected = [
        KeyChange("dst_1", 1, KeyState.ACTIVE),
        KeyChange("dst_1", 1, KeyState.RETIRED),
        KeyChange("dst_1", 2, KeyState.ACTIVE),
    ]
    assert (await backend.outbox(), await announced(backend, len(expected))) == (
        ["Destination Encryption Keys Generated", "Destination Encryption Keys Regenerated"],
        expected,
    )


async def test_an_audit_in_a_reading_block_is_kept(backend: Backend) -> None:
    """A reading block writes its audit entry too (a read by a person; a refused attempt)."""
    async with backend.store.reading("dst_1") as tx:
        await tx.audit(entry("Destination Public Key Viewed"))
    assert await backend.outbox() == ["Destination Public Key Viewed"]


@pytest.mark.parametrize(
    ("second", "request_hash"),
    [
        (version(1, KeyState.RETIRED), None),  # the same version number
        (version(2), None),  # a second active version
        (version(2, KeyState.RETIRED), b"req"),  # the same request id
    ],
    ids=["same version", "second active", "same request id"],
)
async def test_a_conflicting_insert_is_aborted(
    backend: Backend, second: KeyVersion, request_hash: bytes | None
) -> None:
    """The last line of defence under the lock: a clash is ABORTED, never a second row."""
    async with backend.store.locked("dst_1") as tx:
        await tx.insert(version(1), b"req", None)
    with pytest.raises(Aborted, match="concurrent change"):
        await insert(backend, second, request_hash)
    async with backend.store.reading("dst_1") as tx:
        assert [s.key for s in await tx.versions()] == [version(1)]


async def test_one_pending_version_at_a_time(backend: Backend) -> None:
    """A second pending version is ABORTED."""
    async with backend.store.locked("dst_1") as tx:
        await tx.insert(version(1, KeyState.PENDING), None, b"c1")
    with pytest.raises(Aborted):
        await insert(backend, version(2, KeyState.PENDING), None, b"c2")


async def test_set_state_stamps_activation_and_retirement(backend: Backend) -> None:
    """ACTIVE stamps activated_at, RETIRED stamps retired_at, with the time given."""
    later = T0 + timedelta(minutes=5)
    async with backend.store.locked("dst_1") as tx:
        await tx.insert(version(1), None, None)
        await tx.insert(version(2, KeyState.PENDING), None, b"challenge")
    async with backend.store.locked("dst_1") as tx:
        await tx.set_state(1, KeyState.RETIRED, later)
        await tx.set_state(2, KeyState.ACTIVE, later)
    async with backend.store.reading("dst_1") as tx:
        rows = [s.key for s in await tx.versions()]
    assert rows == [
        replace(version(2, KeyState.PENDING), state=KeyState.ACTIVE, activated_at=later),
        replace(version(1), state=KeyState.RETIRED, retired_at=later),
    ]


async def test_expire_due_expires_audits_and_announces_only_overdue_pending(
    backend: Backend,
) -> None:
    """Pending versions past their deadline become expired, each with its audit entry and
    announcement; a pending version not yet due and an active one are untouched."""
    due = version(2, KeyState.PENDING)
    not_due = replace(version(1, KeyState.PENDING, dest="dst_2"), confirm_by=T0 + timedelta(days=1))
    async with backend.store.locked("dst_1") as tx:
        await tx.insert(version(1), None, None)
        await tx.insert(due, None, b"c")
    async with backend.store.locked("dst_2") as tx:
        await tx.insert(not_due, None, b"c")
    expired = await backend.store.expire_due(
        T0 + timedelta(hours=1), lambda key: entry("Key Version Expired")
    )
    async with backend.store.reading("dst_1") as tx:
        states = [s.key.state for s in await tx.versions()]
    changes = await announced(backend, 4)
    assert (expired, states, await backend.outbox(), changes[-1]) == (
        [replace(due, state=KeyState.EXPIRED)],
        [KeyState.EXPIRED, KeyState.ACTIVE],
        ["Key Version Expired"],
        KeyChange("dst_1", 2, KeyState.EXPIRED),
    )


async def test_an_entry_auditsvc_would_refuse_fails_the_block(backend: Backend) -> None:
    """The outbox checks auditsvc's rules: the block's insert is not committed either."""

    async def insert_with_a_refused_entry() -> None:
        async with backend.store.locked("dst_1") as tx:
            await tx.insert(version(1), None, None)
            await tx.audit(entry("Generate Key"))

    with pytest.raises(InvalidArgument, match="past-tense verb"):
        await insert_with_a_refused_entry()
    async with backend.store.reading("dst_1") as tx:
        assert (await tx.versions(), await backend.outbox()) == ([], [])


async def test_an_overdue_key_with_an_entry_auditsvc_would_refuse_stays_pending(
    backend: Backend,
) -> None:
    """expire_due is one transaction: a refused entry expires nothing and queues nothing."""
    async with backend.store.locked("dst_1") as tx:
        await tx.insert(version(2, KeyState.PENDING), None, b"c")
    with pytest.raises(InvalidArgument, match="past-tense verb"):
        await backend.store.expire_due(T0 + timedelta(hours=1), lambda key: entry("Expire Key"))
    async with backend.store.reading("dst_1") as tx:
        states = [s.key.state for s in await tx.versions()]
    assert (states, await backend.outbox()) == ([KeyState.PENDING], [])


async def test_locked_blocks_on_one_destination_run_one_after_the_other(
    backend: Backend,
) -> None:
    """A second locked block waits for the first to commit, then sees its insert."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def first() -> None:
        async with backend.store.locked("dst_1") as tx:
            await tx.insert(version(1), None, None)
            entered.set()
            await release.wait()

    async def second() -> list[int]:
        async with backend.store.locked("dst_1") as tx:
            return [s.key.version for s in await tx.versions()]

    holder = asyncio.create_task(first())
    async with asyncio.timeout(10):
        await entered.wait()
    waiter = asyncio.create_task(second())
    await eventually(backend.waiting, timeout=10, what="the second block waits for the lock")
    release.set()
    async with asyncio.timeout(10):
        await holder
        assert await waiter == [1]


async def test_reading_does_not_wait_for_the_lock(backend: Backend) -> None:
    """A reading block runs while a locked one is open, and sees only committed rows."""
    release = asyncio.Event()
    inserted = asyncio.Event()

    async def holder() -> None:
        async with backend.store.locked("dst_1") as tx:
            await tx.insert(version(1), None, None)
            inserted.set()
            await release.wait()

    task = asyncio.create_task(holder())
    try:
        async with asyncio.timeout(10):
            await inserted.wait()
            async with backend.store.reading("dst_1") as tx:
                seen = await tx.versions()
    finally:
        release.set()
        await task
    assert seen == []
