"""The AuditStore contract, run against FakeAuditStore and the PostgreSQL store alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phiseal_dev.testing import PgCluster
from services.auditsvc import chain
from services.auditsvc.audit_log import Event, Filter
from services.auditsvc.store import SCHEMA, WRITER_ROLE, AuditStore
from services.common.data.db import create_pool
from tests.auditsvc.fakes import FakeAuditStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
KEY_ID = chain.key_id(KEY.public_key())
PEM = chain.public_key_pem(KEY.public_key())


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


@dataclass
class Backend:
    store: Any  # FakeAuditStore | AuditStore: the AuditStore protocol plus register_key


@pytest_asyncio.fixture(params=["fake", "postgres"])
async def backend(
    request: pytest.FixtureRequest, pg_cluster: PgCluster, shared_database: str
) -> AsyncIterator[Backend]:
    """The fake, or the PostgreSQL store (as the writer role) with its schema emptied."""
    if request.param == "fake":
        fake = FakeAuditStore()
        await fake.register_key(KEY_ID, PEM)
        yield Backend(fake)
        return
    await pg_cluster.empty_schema(shared_database, SCHEMA)
    pool = await create_pool(
        shared_database, schema=SCHEMA, application="contract", max_size=4, role=WRITER_ROLE
    )
    try:
        store = AuditStore(pool)
        await store.register_key(KEY_ID, PEM)
        yield Backend(store)
    finally:
        await pool.close()


async def whole_chain(backend: Backend, workspace_id: str = "ws_1") -> list[chain.ChainRecord]:
    records, _, _, _ = await backend.store.verify_inputs(workspace_id, 0, 0)
    return list(records)


def sign(workspace_id: str, sequence: int, head_hash: str) -> chain.Checkpoint:
    return chain.sign_checkpoint(KEY, workspace_id, sequence, head_hash, T0)


async def test_appends_chain_each_workspace_from_the_genesis(backend: Backend) -> None:
    """Sequences count per workspace from 1; each record links to the previous one's hash."""
    events = [event(1), event(2, "ws_2"), event(3)]
    result = await backend.store.append(events, T0)
    ws_1, ws_2 = await whole_chain(backend), await whole_chain(backend, "ws_2")
    assert (result.recorded, result.duplicates) == (3, 0)
    assert [(r.sequence, r.event_id) for r in ws_1] == [
        (1, events[0].event_id),
        (2, events[2].event_id),
    ]
    assert [r.prev_hash for r in ws_1] == [chain.GENESIS_HASH, ws_1[0].hash]
    assert [(r.sequence, r.prev_hash) for r in ws_2] == [(1, chain.GENESIS_HASH)]


async def test_records_read_back_with_exactly_the_hashed_fields(backend: Backend) -> None:
    """The fields read back are the event's fields at its sequence, and hash as stored."""
    original = event(1)
    await backend.store.append([original], T0)
    (record,) = await whole_chain(backend)
    assert (record.fields, chain.record_hash(record.prev_hash, record.fields)) == (
        original.fields(1, T0),
        record.hash,
    )


async def test_duplicate_event_ids_are_counted_not_appended(backend: Backend) -> None:
    """In one batch or across batches, an event id is recorded once."""
    first = event(1)
    once = await backend.store.append([first, first], T0)
    again = await backend.store.append([first, event(2)], T0)
    assert ((once.recorded, once.duplicates), (again.recorded, again.duplicates)) == (
        (1, 1),
        (1, 1),
    )
    assert [r.sequence for r in await whole_chain(backend)] == [1, 2]


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
    backend: Backend, flt: Filter, expected: list[int]
) -> None:
    """The page holds the matching records; the 'Viewed' record is appended after it."""
    await backend.store.append(
        [
            event(1),
            event(2, actor_user_id="bob"),
            event(3, event_type="Audit Log Exported"),
            event(4, end_user_id="user-7"),
        ],
        T0,
    )
    viewed = event(9, event_type="Audit Log Viewed")
    page = await backend.store.query_and_record(flt, 0, 10, viewed, T0)
    chain_after = await whole_chain(backend)
    assert ([r.sequence for r in page], chain_after[-1].event_id) == (expected, viewed.event_id)


async def test_query_pages_after_a_sequence_up_to_a_limit(backend: Backend) -> None:
    """after excludes up to that sequence; limit caps the page."""
    await backend.store.append([event(n) for n in range(1, 6)], T0)
    page = await backend.store.query_and_record(Filter("ws_1"), 2, 2, event(9), T0)
    assert [r.sequence for r in page] == [3, 4]


async def test_export_is_a_snapshot_with_checkpoints_and_keys(backend: Backend) -> None:
    """Records appended after the export began are not in it; checkpoints up to the last
    record exported and the registered keys are."""
    await backend.store.append([event(1), event(2)], T0)
    await backend.store.checkpoint_heads(sign, None)
    async with backend.store.export(Filter("ws_1")) as snap:
        await backend.store.append([event(3)], T0)
        records = [r async for r in snap.records]
        checkpoints = await snap.checkpoints(records[-1].sequence)
        keys = dict(snap.public_keys)
    assert ([r.sequence for r in records], [c.sequence for c in checkpoints], keys) == (
        [1, 2],
        [2],
        {KEY_ID: PEM},
    )


async def test_verify_inputs_of_a_range_anchor_on_the_record_before(backend: Backend) -> None:
    """first..last, with the record before as the anchor and checkpoints inside the range."""
    await backend.store.append([event(n) for n in range(1, 4)], T0)
    await backend.store.checkpoint_heads(sign, None)
    await backend.store.append([event(n) for n in range(4, 6)], T0)
    whole = await whole_chain(backend)
    records, checkpoints, keys, anchor = await backend.store.verify_inputs("ws_1", 3, 4)
    assert (
        [r.sequence for r in records],
        [c.sequence for c in checkpoints],
        keys,
        anchor,
    ) == ([3, 4], [3], {KEY_ID: PEM}, chain.Anchor(2, whole[1].hash))


async def test_checkpoints_sign_each_grown_head_once(backend: Backend) -> None:
    """Every workspace whose head grew is signed at its head; nothing new, nothing signed."""
    await backend.store.append([event(1), event(2), event(3, "ws_2")], T0)
    only_ws_2 = await backend.store.checkpoint_heads(sign, "ws_2")
    rest = await backend.store.checkpoint_heads(sign, None)
    again = await backend.store.checkpoint_heads(sign, None)
    _, checkpoints, _, _ = await backend.store.verify_inputs("ws_1", 0, 0)
    head = (await whole_chain(backend))[-1]
    assert (only_ws_2, rest, again, [(c.sequence, c.head_hash) for c in checkpoints]) == (
        1,
        1,
        0,
        [(2, head.hash)],
    )
