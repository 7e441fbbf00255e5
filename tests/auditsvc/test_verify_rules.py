"""Chain verification at the domain level: AuditLog.verify over the in-memory store, tampered
as a superuser would tamper the tables (edited, removed, inserted, reordered records, a
checkpoint that does not match). No gRPC, no PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phiseal_dev.testing import ManualClock
from services.auditsvc import chain
from services.auditsvc.audit_log import AuditLog
from services.auditsvc.chain import Problem
from services.auditsvc.journal import Journal
from services.common.security.auth import Caller, Principal, PrincipalKind, Role
from tests.auditsvc.fakes import FakeAuditStore
from tests.auditsvc.test_audit_store_contract import T0, event

WS = "ws_1"
# A service records; an auditor of the workspace verifies (the role checks are tested through
# gRPC in test_query_export).
WRITER = Caller(Principal("policysvc", kind=PrincipalKind.SERVICE), "req-1")
READER = Caller(Principal("auditor", memberships={WS: frozenset({Role.AUDITOR})}), "req-2")


@pytest.fixture
async def store() -> FakeAuditStore:
    return FakeAuditStore()


@pytest.fixture
async def log(store: FakeAuditStore, tmp_path: Path) -> AuditLog:
    """An audit log holding five records of ws_1, checkpointed at its head (sequence 5); it
    trusts its own signing key and journals to a file."""
    key = Ed25519PrivateKey.generate()
    journal = Journal(tmp_path / "checkpoints.jsonl")
    made = AuditLog(store, key, chain.trust(key.public_key()), journal, clock=ManualClock(T0))
    await made.record(WRITER, [event(n, WS) for n in range(1, 6)])
    await made.checkpoint()
    return made


def edit(store: FakeAuditStore, at: int, **columns: Any) -> None:
    """UPDATE records SET <columns> WHERE sequence = <at>: the hash is left as it was."""
    rows = store.records[WS]
    index = next(i for i, r in enumerate(rows) if r.sequence == at)
    rows[index] = replace(rows[index], fields={**rows[index].fields, **columns})


def problem(verdict: chain.Verdict) -> tuple[Problem, int] | None:
    return None if verdict.problem is None else (verdict.problem.kind, verdict.problem.sequence)


async def test_an_untouched_chain_verifies_with_its_checkpoint(log: AuditLog) -> None:
    """Five records, one checkpoint, no problem."""
    verdict = await log.verify(READER, WS, 0, 0)
    assert (verdict.ok, verdict.records_checked, verdict.checkpoints_checked) == (True, 5, 1)


async def test_an_edited_record_is_named_edited(log: AuditLog, store: FakeAuditStore) -> None:
    """A changed actor on record 3 is EDITED at 3, naming its event."""
    edit(store, 3, actor_user_id="mallory")
    verdict = await log.verify(READER, WS, 0, 0)
    assert (problem(verdict), verdict.problem and verdict.problem.event_id) == (
        (Problem.EDITED, 3),
        store.records[WS][2].event_id,
    )


async def test_a_removed_record_is_named_removed(log: AuditLog, store: FakeAuditStore) -> None:
    """Deleting record 2 is REMOVED at 2."""
    del store.records[WS][1]
    assert problem(await log.verify(READER, WS, 0, 0)) == (Problem.REMOVED, 2)


async def test_a_removed_tail_is_caught_by_the_checkpoint(
    log: AuditLog, store: FakeAuditStore
) -> None:
    """Deleting records 4 and 5 leaves the chain intact but short of its checkpoint: REMOVED."""
    del store.records[WS][3:]
    assert problem(await log.verify(READER, WS, 0, 0)) == (Problem.REMOVED, 4)


async def test_an_inserted_record_is_named_inserted(log: AuditLog, store: FakeAuditStore) -> None:
    """A record sealed onto a forged predecessor, slid in at 3 (the rest moved up), is
    INSERTED: its own hash holds but it does not follow record 2."""
    rows = store.records[WS]
    forged = chain.seal("f" * 64, {**rows[2].fields, "event_id": "forged"})
    moved = [replace(r, fields={**r.fields, "sequence": r.sequence + 1}) for r in rows[2:]]
    store.records[WS] = [*rows[:2], forged, *moved]
    assert problem(await log.verify(READER, WS, 0, 0)) == (Problem.INSERTED, 3)


async def test_swapped_records_are_named_reordered(log: AuditLog, store: FakeAuditStore) -> None:
    """Records 3 and 4 exchanging sequence numbers is REORDERED at 3."""
    edit(store, 3, sequence=1000)
    edit(store, 4, sequence=3)
    edit(store, 1000, sequence=4)
    verdict = await log.verify(READER, WS, 0, 0)
    assert problem(verdict) == (Problem.REORDERED, 3)


async def test_a_checkpoint_over_another_head_is_a_mismatch(
    log: AuditLog, store: FakeAuditStore
) -> None:
    """A checkpoint whose signed head is not the record's hash is CHECKPOINT_MISMATCH."""
    (checkpoint,) = store.checkpoints[WS]
    store.checkpoints[WS] = [replace(checkpoint, head_hash="0" * 64)]
    assert problem(await log.verify(READER, WS, 0, 0)) == (Problem.CHECKPOINT_MISMATCH, 5)


async def test_a_rewritten_chain_is_caught_by_its_signed_checkpoint(
    log: AuditLog, store: FakeAuditStore
) -> None:
    """Record 5 edited and resealed (its hash recomputed) links fine, but the signed
    checkpoint still names the old head: CHECKPOINT_MISMATCH."""
    rows = store.records[WS]
    rows[4] = chain.seal(rows[4].prev_hash, {**rows[4].fields, "target": "elsewhere"})
    assert problem(await log.verify(READER, WS, 0, 0)) == (Problem.CHECKPOINT_MISMATCH, 5)


async def test_a_range_after_an_edit_verifies_and_one_holding_it_does_not(
    log: AuditLog, store: FakeAuditStore
) -> None:
    """Records 3..5 verify after an edit of 2; 2..4 report it."""
    edit(store, 2, target="x")
    after = await log.verify(READER, WS, 3, 5)
    holding = await log.verify(READER, WS, 2, 4)
    assert ((after.ok, after.records_checked), problem(holding)) == (
        (True, 3),
        (Problem.EDITED, 2),
    )


async def test_a_deleted_tail_with_a_rewound_head_is_caught_by_the_last_append(
    log: AuditLog, store: FakeAuditStore
) -> None:
    """Records 6 and 7, not yet checkpointed, deleted and the chain head set back to 5: the
    chain and its checkpoint agree, but this service appended up to 7: REMOVED at 6."""
    await log.record(WRITER, [event(n, WS) for n in (6, 7)])
    del store.records[WS][5:]
    store.heads[WS] = (5, store.records[WS][4].hash)
    assert problem(await log.verify(READER, WS, 0, 0)) == (Problem.REMOVED, 6)


async def test_a_checkpoint_deleted_with_its_records_is_caught_by_the_journal(
    log: AuditLog, store: FakeAuditStore
) -> None:
    """Records 4 and 5 deleted together with the checkpoint over them and the head rewound:
    the journal outside the database still holds the checkpoint: CHECKPOINT_MISSING."""
    del store.records[WS][3:]
    store.checkpoints[WS] = []
    store.heads[WS] = (3, store.records[WS][2].hash)
    assert problem(await log.verify(READER, WS, 0, 0)) == (Problem.CHECKPOINT_MISSING, 5)


async def test_no_checkpoint_is_signed_over_an_edited_record(
    log: AuditLog, store: FakeAuditStore
) -> None:
    """Record 6, edited before the next round, is not signed over: the round raises the alarm
    (EDITED at 6) and signs nothing; once it is put back the next round signs."""
    await log.record(WRITER, [event(n, WS) for n in (6, 7)])
    original = store.records[WS][5]
    edit(store, 6, target="elsewhere")
    refused = await log.checkpoint(WS)
    alarm = log.checkpoints.alarms.get(WS)
    store.records[WS][5] = original
    signed = await log.checkpoint(WS)
    assert (refused, alarm and (alarm.kind, alarm.sequence), signed, log.checkpoints.alarms) == (
        0,
        (Problem.EDITED, 6),
        1,
        {},
    )
