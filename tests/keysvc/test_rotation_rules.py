"""Rotation states at the domain level, on the in-memory store and a manual clock: immediate,
after confirmation, confirm, wrong answer, expiry. No gRPC, no PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from jwcrypto import jwe, jwk

from phiseal_dev.testing import ManualClock
from services.common.errors import FailedPrecondition, PermissionDenied
from services.common.security.auth import Caller, Principal, Role
from services.keysvc.crypto import Algorithm
from services.keysvc.keys import (
    EXPIRY_SWEEPER,
    Activation,
    Created,
    KeyChange,
    KeyManager,
    KeyState,
)
from tests.keysvc.fakes import FakeDirectory, FakeKeyStore

TTL = timedelta(hours=1)
IMMEDIATE = Activation.IMMEDIATE
LATER = Activation.AFTER_CONFIRMATION
ADMIN = Caller(Principal("admin-1", memberships={"ws_1": frozenset({Role.ADMIN})}), "req-1")
SWEEPER = Caller.system(EXPIRY_SWEEPER)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> FakeKeyStore:
    return FakeKeyStore()


@pytest.fixture
async def manager(store: FakeKeyStore, clock: ManualClock) -> KeyManager:
    """A manager whose destination dst_1 (in ws_1) already has an active version 1."""
    made = KeyManager(store, FakeDirectory({"dst_1": "ws_1"}), pending_ttl=TTL, clock=clock)
    await made.generate(ADMIN, "dst_1", Algorithm.X25519)
    return made


def solve(created: Created) -> str:
    """What the customer does: decrypt the challenge with the new private key."""
    assert created.private_key is not None
    token = jwe.JWE()
    token.deserialize(created.challenge, key=jwk.JWK.from_pem(created.private_key.pem.encode()))
    return str(token.payload.decode())


async def states(manager: KeyManager) -> list[tuple[int, KeyState]]:
    return [(k.version, k.state) for k in await manager.list_versions(ADMIN, "dst_1")]


def audited(store: FakeKeyStore) -> list[tuple[str, str]]:
    return [(e.event_type, e.outcome.value) for e in store.outbox]


async def test_immediate_rotation_retires_the_previous_version(manager: KeyManager) -> None:
    """v2 is active at once, v1 retired, and the answer names v1 as the previous version."""
    created = await manager.regenerate(ADMIN, "dst_1", None, IMMEDIATE)
    assert (created.key.state, created.previous_version, created.challenge) == (
        KeyState.ACTIVE,
        1,
        "",
    )
    assert await states(manager) == [(2, KeyState.ACTIVE), (1, KeyState.RETIRED)]


async def test_rotation_after_confirmation_waits_pending(
    manager: KeyManager, clock: ManualClock
) -> None:
    """v2 is pending with a challenge and a deadline one TTL away; v1 stays active."""
    created = await manager.regenerate(ADMIN, "dst_1", None, LATER)
    assert (created.key.state, created.key.confirm_by, bool(created.challenge)) == (
        KeyState.PENDING,
        clock.now + TTL,
        True,
    )
    assert await states(manager) == [(2, KeyState.PENDING), (1, KeyState.ACTIVE)]


async def test_the_right_answer_activates_the_pending_version(
    manager: KeyManager, store: FakeKeyStore
) -> None:
    """Confirming v2 makes it active and retires v1, audited as succeeded."""
    created = await manager.regenerate(ADMIN, "dst_1", None, LATER)
    confirmed = await manager.confirm(ADMIN, "dst_1", 2, solve(created))
    assert (confirmed.state, audited(store)[-1], await states(manager)) == (
        KeyState.ACTIVE,
        ("Destination Encryption Key Confirmed", "succeeded"),
        [(2, KeyState.ACTIVE), (1, KeyState.RETIRED)],
    )


async def test_a_wrong_answer_is_denied_and_the_version_stays_pending(
    manager: KeyManager, store: FakeKeyStore
) -> None:
    """PERMISSION_DENIED, audited as denied; nothing changes state."""
    await manager.regenerate(ADMIN, "dst_1", None, LATER)
    with pytest.raises(PermissionDenied, match="stays pending"):
        await manager.confirm(ADMIN, "dst_1", 2, "not the plaintext")
    assert (audited(store)[-1], await states(manager)) == (
        ("Destination Encryption Key Confirmed", "denied"),
        [(2, KeyState.PENDING), (1, KeyState.ACTIVE)],
    )


async def test_an_active_version_cannot_be_confirmed(manager: KeyManager) -> None:
    """Only a pending version can be confirmed."""
    with pytest.raises(FailedPrecondition, match="only a pending version"):
        await manager.confirm(ADMIN, "dst_1", 1, "anything")


async def test_a_pending_version_reads_expired_at_its_deadline(
    manager: KeyManager, clock: ManualClock
) -> None:
    """At confirm_by the version reads EXPIRED, before any sweep ran."""
    await manager.regenerate(ADMIN, "dst_1", None, LATER)
    clock.advance(TTL)
    assert await states(manager) == [(2, KeyState.EXPIRED), (1, KeyState.ACTIVE)]


async def test_the_right_answer_after_the_deadline_is_refused(
    manager: KeyManager, clock: ManualClock, store: FakeKeyStore
) -> None:
    """FAILED_PRECONDITION saying it was not confirmed in time; v1 stays active."""
    created = await manager.regenerate(ADMIN, "dst_1", None, LATER)
    clock.advance(TTL + timedelta(seconds=1))
    with pytest.raises(FailedPrecondition, match="not confirmed in time"):
        await manager.confirm(ADMIN, "dst_1", 2, solve(created))
    assert audited(store)[-1] == ("Destination Encryption Key Confirmed", "failed")


async def test_the_sweep_expires_and_announces_overdue_versions(
    manager: KeyManager, clock: ManualClock, store: FakeKeyStore
) -> None:
    """Only once overdue: the sweep stores EXPIRED, audits it as keysvc and announces it."""
    await manager.regenerate(ADMIN, "dst_1", None, LATER)
    early = await manager.expire_due(SWEEPER)
    clock.advance(TTL)
    expired = await manager.expire_due(SWEEPER)
    assert ([k.version for k in early], [k.version for k in expired]) == ([], [2])
    assert (store.announced[-1], store.outbox[-1].actor_user_id) == (
        KeyChange("dst_1", 2, KeyState.EXPIRED),
        "service:keysvc-expiry-sweeper",
    )


async def test_a_new_rotation_supersedes_a_pending_one(
    manager: KeyManager, store: FakeKeyStore
) -> None:
    """v2 pending, then an immediate v3: v2 expires, v1 retires, v3 is active."""
    await manager.regenerate(ADMIN, "dst_1", None, LATER)
    await manager.regenerate(ADMIN, "dst_1", None, IMMEDIATE)
    assert await states(manager) == [
        (3, KeyState.ACTIVE),
        (2, KeyState.EXPIRED),
        (1, KeyState.RETIRED),
    ]
    assert ("Destination Encryption Key Expired", "succeeded") in audited(store)
