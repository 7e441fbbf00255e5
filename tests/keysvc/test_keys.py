"""Domain rules of KeyManager with in-memory fakes: no database, no gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.common.audit import AuditEntry
from services.common.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from services.common.security.auth import Caller, Principal, Role
from services.keysvc import crypto
from services.keysvc.crypto import Algorithm
from services.keysvc.keys import (
    EXPIRY_SWEEPER,
    Activation,
    Destination,
    KeyChange,
    KeyManager,
    KeyState,
    KeyVersion,
    StoredVersion,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# The destinations of FakeDirectory live in ws_1, where ADMIN is an admin.
ADMIN = Caller(Principal("admin-1", memberships={"ws_1": frozenset({Role.ADMIN})}), "req-test")


def person(subject: str, **roles: Role) -> Caller:
    """A person holding one role in each named workspace."""
    return Caller(
        Principal(subject, memberships={ws: frozenset({r}) for ws, r in roles.items()}), "req-9"
    )


class FakeTransaction:
    def __init__(self, rows: list[StoredVersion]) -> None:
        self.rows = rows
        self.audits: list[AuditEntry] = []
        self.changes: list[KeyChange] = []

    async def versions(self) -> list[StoredVersion]:
        return sorted(self.rows, key=lambda s: -s.key.version)

    async def insert(
        self, key: KeyVersion, request_hash: bytes | None, challenge_hash: bytes | None
    ) -> None:
        self.rows.append(StoredVersion(key, request_hash, challenge_hash))
        self.changes.append(KeyChange(key.destination_id, key.version, key.state))

    async def set_state(self, version: int, state: KeyState, at: datetime) -> None:
        self.rows = [
            replace(s, key=replace(s.key, state=state)) if s.key.version == version else s
            for s in self.rows
        ]
        self.changes.append(KeyChange(self.rows[0].key.destination_id, version, state))

    async def audit(self, entry: AuditEntry) -> None:
        self.audits.append(entry)


class FakeStore:
    """Commits a transaction's rows, audits and changes only when its block succeeds."""

    def __init__(self) -> None:
        self.rows: dict[str, list[StoredVersion]] = {}
        self.audits: list[AuditEntry] = []
        self.changes: list[KeyChange] = []

    @asynccontextmanager
    async def locked(self, destination_id: str) -> AsyncIterator[FakeTransaction]:
        tx = FakeTransaction(list(self.rows.get(destination_id, [])))
        yield tx
        self.rows[destination_id] = tx.rows
        self.audits += tx.audits
        self.changes += tx.changes

    reading = locked

    async def expire_due(
        self, now: datetime, audit: Callable[[KeyVersion], AuditEntry]
    ) -> list[KeyVersion]:
        expired = []
        for dest, rows in self.rows.items():
            for i, stored in enumerate(rows):
                key = stored.key
                if key.state is KeyState.PENDING and key.confirm_by and key.confirm_by <= now:
                    rows[i] = replace(stored, key=replace(key, state=KeyState.EXPIRED))
                    expired.append(rows[i].key)
                    self.audits.append(audit(rows[i].key))
                    self.changes.append(KeyChange(dest, key.version, KeyState.EXPIRED))
        return expired


class FakeDirectory:
    def __init__(self, *known: str, down: bool = False) -> None:
        self.known = set(known)
        self.down = down

    async def get(self, destination_id: str) -> Destination:
        if self.down:
            raise Unavailable("policysvc is down")
        if destination_id not in self.known:
            raise NotFound(f"destination {destination_id} not found")
        return Destination(destination_id, "ws_1")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def manager(store: FakeStore, clock: Clock) -> KeyManager:
    return KeyManager(store, FakeDirectory("d1"), pending_ttl=timedelta(hours=1), clock=clock)


def events(store: FakeStore) -> list[tuple[str, str]]:
    return [(a.event_type, a.outcome.value) for a in store.audits]


async def test_refused_duplicate_is_audited_but_changes_nothing(
    manager: KeyManager, store: FakeStore
) -> None:
    """A second generate rolls back and still leaves a failed audit row."""
    await manager.generate(ADMIN, "d1", Algorithm.X25519)
    with pytest.raises(FailedPrecondition):
        await manager.generate(ADMIN, "d1", Algorithm.X25519)
    assert (len(store.rows["d1"]), events(store)) == (
        1,
        [
            ("Destination Encryption Keys Generated", "succeeded"),
            ("Destination Encryption Keys Generated", "failed"),
        ],
    )


async def test_directory_outage_fails_closed(store: FakeStore, clock: Clock) -> None:
    """With policysvc unreachable nothing is written."""
    manager = KeyManager(
        store, FakeDirectory("d1", down=True), pending_ttl=timedelta(hours=1), clock=clock
    )
    with pytest.raises(Unavailable):
        await manager.generate(ADMIN, "d1", Algorithm.X25519)
    assert (store.rows, store.audits) == ({}, [])


async def test_pending_version_reads_as_expired_after_its_deadline(
    manager: KeyManager, clock: Clock
) -> None:
    """Evaluated on read: a pending version past confirm_by is EXPIRED before any sweep."""
    await manager.generate(ADMIN, "d1", Algorithm.X25519)
    await manager.regenerate(ADMIN, "d1", None, Activation.AFTER_CONFIRMATION)
    clock.now = T0 + timedelta(hours=1)
    assert [(k.version, k.state) for k in await manager.list_versions(ADMIN, "d1")] == [
        (2, KeyState.EXPIRED),
        (1, KeyState.ACTIVE),
    ]


async def test_sweep_expires_and_announces(
    manager: KeyManager, store: FakeStore, clock: Clock
) -> None:
    """The sweep marks the overdue version expired, audits it as keysvc and announces it."""
    await manager.generate(ADMIN, "d1", Algorithm.X25519)
    await manager.regenerate(ADMIN, "d1", None, Activation.AFTER_CONFIRMATION)
    clock.now = T0 + timedelta(hours=2)
    sweeper = Caller.system(EXPIRY_SWEEPER)
    expired = await manager.expire_due(sweeper)
    assert [(k.version, k.state) for k in expired] == [(2, KeyState.EXPIRED)]
    assert store.changes[-1] == KeyChange("d1", 2, KeyState.EXPIRED)
    last = store.audits[-1]
    assert (last.event_type, last.actor_user_id, last.request_id) == (
        "Destination Encryption Key Expired",
        "service:keysvc-expiry-sweeper",
        sweeper.request_id,
    )


async def test_wrong_answer_keeps_the_key_pending(manager: KeyManager, store: FakeStore) -> None:
    """PermissionDenied, the state unchanged, and a denied audit row."""
    await manager.generate(ADMIN, "d1", Algorithm.X25519)
    await manager.regenerate(ADMIN, "d1", None, Activation.AFTER_CONFIRMATION)
    with pytest.raises(PermissionDenied):
        await manager.confirm(ADMIN, "d1", 2, "not-the-answer")
    assert events(store)[-1] == ("Destination Encryption Key Confirmed", "denied")
    assert [k.state for k in await manager.list_versions(ADMIN, "d1")] == [
        KeyState.PENDING,
        KeyState.ACTIVE,
    ]


async def test_confirm_after_deadline_is_refused(manager: KeyManager, clock: Clock) -> None:
    """Even the right answer is refused once the deadline passed."""
    await manager.generate(ADMIN, "d1", Algorithm.X25519)
    await manager.regenerate(ADMIN, "d1", None, Activation.AFTER_CONFIRMATION)
    clock.now = T0 + timedelta(hours=1, seconds=1)
    with pytest.raises(FailedPrecondition, match="expired"):
        await manager.confirm(ADMIN, "d1", 2, "whatever")


async def test_import_after_confirmation_without_prior_key_stays_pending(
    manager: KeyManager,
) -> None:
    """A first imported key with AFTER_CONFIRMATION waits; there is no active version yet."""
    public = crypto.generate(Algorithm.X25519).public
    created = await manager.import_key(ADMIN, "d1", public, Activation.AFTER_CONFIRMATION)
    assert (created.key.state, created.previous_version, bool(created.challenge)) == (
        KeyState.PENDING,
        0,
        True,
    )
    with pytest.raises(NotFound, match="pending"):
        await manager.get(ADMIN, "d1")


def test_key_change_payload_round_trips() -> None:
    """The NOTIFY payload parses back; foreign payloads parse to None."""
    change = KeyChange("d1", 3, KeyState.RETIRED)
    assert (KeyChange.from_payload(change.to_payload()), KeyChange.from_payload("{}")) == (
        change,
        None,
    )


async def test_changing_keys_needs_admin_in_the_workspace(
    manager: KeyManager, store: FakeStore
) -> None:
    """An editor of the workspace may not generate keys; nothing is written."""
    with pytest.raises(PermissionDenied, match="admin"):
        await manager.generate(person("user-9", ws_1=Role.EDITOR), "d1", Algorithm.X25519)
    assert store.rows == {}


async def test_reading_keys_needs_a_role_in_that_workspace(manager: KeyManager) -> None:
    """A viewer of another workspace cannot read this destination's key; one of this can."""
    await manager.generate(ADMIN, "d1", Algorithm.X25519)
    with pytest.raises(PermissionDenied):
        await manager.get(person("user-9", ws_2=Role.VIEWER), "d1")
    assert (await manager.get(person("user-8", ws_1=Role.VIEWER), "d1")).version == 1
