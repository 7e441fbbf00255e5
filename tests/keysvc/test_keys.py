"""Domain rules of KeyManager with in-memory fakes: no database, no gRPC (rotation states are
in test_rotation_rules.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from phiseal_dev.testing import ManualClock
from services.common.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from services.common.security.auth import Caller, Principal, Role
from services.keysvc import crypto
from services.keysvc.crypto import Algorithm
from services.keysvc.keys import (
    Activation,
    KeyChange,
    KeyManager,
    KeyState,
)
from tests.keysvc.fakes import FakeDirectory, FakeKeyStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# The destinations of FakeDirectory live in ws_1, where ADMIN is an admin.
ADMIN = Caller(Principal("admin-1", memberships={"ws_1": frozenset({Role.ADMIN})}), "req-test")


def person(subject: str, **roles: Role) -> Caller:
    """A person holding one role in each named workspace."""
    return Caller(
        Principal(subject, memberships={ws: frozenset({r}) for ws, r in roles.items()}), "req-9"
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def store() -> FakeKeyStore:
    return FakeKeyStore()


@pytest.fixture
def manager(store: FakeKeyStore, clock: ManualClock) -> KeyManager:
    return KeyManager(
        store, FakeDirectory({"d1": "ws_1"}), pending_ttl=timedelta(hours=1), clock=clock
    )


def events(store: FakeKeyStore) -> list[tuple[str, str]]:
    return [(a.event_type, a.outcome.value) for a in store.outbox]


async def test_refused_duplicate_is_audited_but_changes_nothing(
    manager: KeyManager, store: FakeKeyStore
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


async def test_directory_outage_fails_closed(store: FakeKeyStore, clock: ManualClock) -> None:
    """With policysvc unreachable nothing is written."""
    manager = KeyManager(
        store, FakeDirectory({"d1": "ws_1"}, down=True), pending_ttl=timedelta(hours=1), clock=clock
    )
    with pytest.raises(Unavailable):
        await manager.generate(ADMIN, "d1", Algorithm.X25519)
    assert (store.rows, store.outbox) == ({}, [])


async def test_import_after_confirmation_without_prior_key_stays_pending(
    manager: KeyManager,
) -> None:
    """A first imported key with AFTER_CONFIRMATION waits; there is no active version yet."""
    public = crypto.generate(Algorithm.X25519).public
    created = await manager.import_key(ADMIN, "d1", lambda: public, Activation.AFTER_CONFIRMATION)
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
    manager: KeyManager, store: FakeKeyStore
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
