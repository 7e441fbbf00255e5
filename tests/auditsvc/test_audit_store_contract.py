"""The AuditStore contract, run against FakeAuditStore and the PostgreSQL store alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phiseal_dev.dbroles import runtime_url
from phiseal_dev.testing import PgCluster
from services.auditsvc import chain
from services.auditsvc.audit_log import AuditStore, Event, Filter
from services.auditsvc.checkpointer import ChainState
from services.auditsvc.store import RUNTIME_ROLE, SCHEMA
from services.auditsvc.store import AuditStore as PgAuditStore
from services.common.data.db import create_pool
from tests.auditsvc.fakes import FakeAuditStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()


def event(n: int, workspace_id: str = "ws_1", **fields: Any) -> Event:
    """Event ``n``, n minutes after T0, as the domain validates it."""
    values: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "workspace_id": workspace_id,
        "actor_user_id": "alice",
        "event_type": "Destination Encryption Enabled",
        "timestamp": T0 + timedelta(minutes=n),
        "outcome": "succeeded",
        "details": {"version": n, "fields": ["traits.email"], "ratio": 0.5, "nested": {"a": [1]}},
        **fields,
    }
    return Event(**values).validated()


@pytest_asyncio.fixture(params=["fake", "postgres"])
async def store(
    request: pytest.FixtureRequest, pg_cluster: PgCluster, shared_database: str
) -> AsyncIterator[AuditStore]:
    """The fake, or the PostgreSQL store with its schema emptied, connected as auditsvc runs:
    its own login in the writer role, which may only insert and select."""
    if request.param == "fake":
        yield FakeAuditStore()
        return
    await pg_cluster.empty_schema(shared_database, SCHEMA)
    pool = await create_pool(
        runtime_url(shared_database, "auditsvc"),
        schema=SCHEMA,
        application="contract",
        max_size=4,
        role=RUNTIME_ROLE,
    )
    try:
        yield PgAuditStore(pool)
    finally:
        await pool.close()


async def whole_chain(store: AuditStore, workspace_id: str = "ws_1") -> list[chain.ChainRecord]:
    return (await store.verify_inputs(workspace_id, 0, 0)).records


async def sign_round(
    store: AuditStore, workspace_id: str | None = None, known: Sequence[str] = ()
) -> list[ChainState]:
    """One signing round that signs every head it is shown; returns the states it saw."""
    async with store.signing_round(workspace_id, known) as rnd:
        states = list(rnd.states)
        await rnd.insert(
            [
                chain.sign_checkpoint(KEY, s.workspace_id, *s.head, T0, s.last_checkpoint)
                for s in states
                if s.head is not None and s.head[0] > 0
            ]
        )
    return states


async def test_appends_chain_each_workspace_from_the_genesis(store: AuditStore) -> None:
    """Sequences count per workspace from 1; each record links to the previous one's hash; the
    result names each workspace's new head."""
    events = [event(1), event(2, "ws_2"), event(3)]
    result = await store.append(events, T0)
    ws_1, ws_2 = await whole_chain(store), await whole_chain(store, "ws_2")
    assert (result.recorded, result.duplicates) == (3, 0)
    assert [(r.sequence, r.event_id) for r in ws_1] == [
        (1, events[0].event_id),
        (2, events[2].event_id),
    ]
    assert [r.prev_hash for r in ws_1] == [chain.GENESIS_HASH, ws_1[0].hash]
    assert [(r.sequence, r.prev_hash) for r in ws_2] == [(1, chain.GENESIS_HASH)]
    assert dict(result.heads) == {"ws_1": (2, ws_1[1].hash), "ws_2": (1, ws_2[0].hash)}


async def test_records_read_back_with_exactly_the_hashed_fields(store: AuditStore) -> None:
    """The fields read back are the event's fields at its sequence, and hash as stored."""
    original = event(1)
    await store.append([original], T0)
    (record,) = await whole_chain(store)
    assert (record.fields, chain.record_hash(record.prev_hash, record.fields)) == (
        original.fields(1, T0),
        record.hash,
    )


async def test_duplicate_event_ids_are_counted_not_appended(store: AuditStore) -> None:
    """In one batch or across batches, an event id is recorded once; a batch of duplicates
    only still names the workspace's head."""
    first = event(1)
    once = await store.append([first, first], T0)
    again = await store.append([first, event(2)], T0)
    only_duplicates = await store.append([first], T0)
    head = (await whole_chain(store))[-1]
    assert ((once.recorded, once.duplicates), (again.recorded, again.duplicates)) == (
        (1, 1),
        (1, 1),
    )
    assert [r.sequence for r in await whole_chain(store)] == [1, 2]
    assert dict(only_duplicates.heads) == {"ws_1": (2, head.hash)}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (Filter("ws_1"), [1, 2, 3, 4]),
        (Filter("ws_1", start_time=T0 + timedelta(minutes=2)), [2, 3, 4]),
        (Filter("ws_1", end_time=T0 + timedelta(minutes=2)), [1]),
        (Filter("ws_1", actor_user_id="bob"), [2]),
        (Filter("ws_1", event_type="Audit Log Exported"), [3]),
        (Filter("ws_1", end_user_id="user-7"), [4]),
    ],
    ids=["all", "from", "until", "actor", "event type", "end user"],
)
async def test_query_selects_by_filter_and_records_the_view_after(
    store: AuditStore, flt: Filter, expected: list[int]
) -> None:
    """The page holds the matching records; the 'Viewed' record is appended after it."""
    await store.append(
        [
            event(1),
            event(2, actor_user_id="bob"),
            event(3, event_type="Audit Log Exported"),
            event(4, end_user_id="user-7"),
        ],
        T0,
    )
    viewed = event(9, event_type="Audit Log Viewed")
    page, appended = await store.query_and_record(flt, 0, 10, viewed, T0)
    last = (await whole_chain(store))[-1]
    assert ([r.sequence for r in page], last.event_id, dict(appended.heads)) == (
        expected,
        viewed.event_id,
        {"ws_1": (5, last.hash)},
    )


async def test_query_pages_after_a_sequence_up_to_a_limit(store: AuditStore) -> None:
    """after excludes up to that sequence; limit caps the page."""
    await store.append([event(n) for n in range(1, 6)], T0)
    page, _ = await store.query_and_record(Filter("ws_1"), 2, 2, event(9), T0)
    assert [r.sequence for r in page] == [3, 4]


async def test_export_is_a_snapshot_with_its_checkpoints(store: AuditStore) -> None:
    """Records and checkpoints added after the export's first read are not in it; the
    checkpoints up to the last record exported are, in number order. (PostgreSQL takes the
    snapshot at the first read, not when the export opens.)"""
    await store.append([event(1)], T0)
    await sign_round(store)
    await store.append([event(2)], T0)
    await sign_round(store)
    async with store.export(Filter("ws_1")) as snap:
        records = [await anext(snap.records)]
        await store.append([event(3)], T0)
        await sign_round(store)
        records += [r async for r in snap.records]
        checkpoints = await snap.checkpoints(records[-1].sequence)
        up_to_first = await snap.checkpoints(1)
    assert (
        [r.sequence for r in records],
        [(c.number, c.sequence) for c in checkpoints],
        [c.number for c in up_to_first],
    ) == ([1, 2], [(1, 1), (2, 2)], [1])


async def test_verify_inputs_of_a_range_anchor_on_the_record_before(store: AuditStore) -> None:
    """first..last, with the record before as the anchor, the checkpoints inside the range
    and the chain head as stored."""
    await store.append([event(n) for n in range(1, 4)], T0)
    await sign_round(store)
    await store.append([event(n) for n in range(4, 6)], T0)
    whole = await whole_chain(store)
    inputs = await store.verify_inputs("ws_1", 3, 4)
    assert (
        [r.sequence for r in inputs.records],
        [c.sequence for c in inputs.checkpoints],
        inputs.anchor,
        inputs.head,
    ) == ([3, 4], [3], chain.Anchor(2, whole[1].hash), (5, whole[4].hash))


async def test_verify_inputs_of_an_unknown_workspace_are_empty(store: AuditStore) -> None:
    """No records, no checkpoints, no head row."""
    inputs = await store.verify_inputs("ws_none", 0, 0)
    assert (inputs.records, inputs.checkpoints, inputs.anchor, inputs.head) == (
        [],
        [],
        chain.Anchor(),
        None,
    )


async def test_a_round_shows_each_chain_from_its_last_checkpoint(store: AuditStore) -> None:
    """Each workspace with a head, or that the service remembers, with its head, its newest
    checkpoint and the records from that checkpoint's sequence on (from 1 before any)."""
    await store.append([event(1), event(2), event(3), event(4, "ws_2")], T0)
    await sign_round(store)
    await store.append([event(5), event(6)], T0)
    states = await sign_round(store, known=["ws_gone"])
    whole = await whole_chain(store)
    seen = {
        s.workspace_id: (
            s.head,
            s.last_checkpoint and (s.last_checkpoint.number, s.last_checkpoint.sequence),
            [r.sequence for r in s.records],
        )
        for s in states
    }
    assert [s.workspace_id for s in states] == ["ws_1", "ws_2", "ws_gone"]
    assert seen == {
        "ws_1": ((5, whole[4].hash), (1, 3), [3, 4, 5]),
        "ws_2": ((1, (await whole_chain(store, "ws_2"))[0].hash), (1, 1), [1]),
        "ws_gone": (None, None, []),
    }


async def test_a_round_of_one_workspace_shows_only_it(store: AuditStore) -> None:
    """A workspace named shows that one chain, even among remembered ones."""
    await store.append([event(1), event(2, "ws_2")], T0)
    states = await sign_round(store, "ws_2", known=["ws_1", "ws_2", "ws_3"])
    first = await sign_round(store)
    assert ([s.workspace_id for s in states], [s.last_checkpoint is None for s in first]) == (
        ["ws_2"],
        [True, False],
    )


async def test_a_round_commits_its_checkpoints_only_when_it_ends_normally(
    store: AuditStore,
) -> None:
    """A round that fails after inserting leaves no checkpoint behind."""

    async def insert_then_fail() -> None:
        async with store.signing_round(None, []) as rnd:
            (state,) = rnd.states
            assert state.head is not None
            await rnd.insert([chain.sign_checkpoint(KEY, "ws_1", *state.head, T0)])
            raise RuntimeError("the journal could not be written")

    await store.append([event(1)], T0)
    with pytest.raises(RuntimeError, match="journal"):
        await insert_then_fail()
    assert (await store.verify_inputs("ws_1", 0, 0)).checkpoints == []


async def test_a_checkpoint_number_is_taken_once(store: AuditStore) -> None:
    """Two rounds that both sign checkpoint 1 (replicas racing) cannot both commit."""
    await store.append([event(1)], T0)
    (state,) = await sign_round(store)
    assert state.head is not None
    with pytest.raises(asyncpg.UniqueViolationError):
        async with store.signing_round(None, []) as rnd:
            await rnd.insert([chain.sign_checkpoint(KEY, "ws_1", *state.head, T0)])
    assert [c.number for c in (await store.verify_inputs("ws_1", 0, 0)).checkpoints] == [1]
