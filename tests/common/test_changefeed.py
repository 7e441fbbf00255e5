"""The LISTEN/NOTIFY change feed: RESYNC first, ordered changes, heartbeats, resync on loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from services.common.data.changefeed import ChangeFeed, FeedMessage, Subscription
from services.common.vocabulary import ChangeKind

CHANNEL = "test_changes"


@pytest_asyncio.fixture
async def feed(database_url: str) -> AsyncIterator[ChangeFeed]:
    feed = ChangeFeed(database_url, CHANNEL, heartbeat_interval=0.1)
    await feed.start()
    yield feed
    await feed.stop()


async def next_of(sub: Subscription, kinds: set[ChangeKind], within: float = 10) -> FeedMessage:
    """The next message of one of ``kinds``, skipping others (heartbeats mostly)."""
    iterator = aiter(sub)
    async with asyncio.timeout(within):
        while True:
            message = await anext(iterator)
            if message.kind in kinds:
                return message


async def notify(database_url: str, payload: str) -> None:
    con = await asyncpg.connect(database_url)
    try:
        async with con.transaction():
            await con.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    finally:
        await con.close()


async def test_first_message_is_resync(feed: ChangeFeed) -> None:
    """A new subscriber starts with RESYNC: reload everything before trusting changes."""
    sub = feed.subscribe()
    first = await next_of(sub, {ChangeKind.RESYNC, ChangeKind.CHANGED, ChangeKind.HEARTBEAT})
    assert first.kind == ChangeKind.RESYNC


async def test_committed_changes_arrive_in_order(feed: ChangeFeed, database_url: str) -> None:
    """Each NOTIFY committed by another connection reaches the subscriber, in commit order."""
    sub = feed.subscribe()
    await next_of(sub, {ChangeKind.RESYNC})
    for n in range(3):
        await notify(database_url, f"change-{n}")
    payloads = [(await next_of(sub, {ChangeKind.CHANGED})).payload for _ in range(3)]
    assert payloads == ["change-0", "change-1", "change-2"]


async def test_heartbeats_flow_while_live(feed: ChangeFeed) -> None:
    """While the connection is healthy the feed confirms freshness with heartbeats."""
    sub = feed.subscribe()
    await next_of(sub, {ChangeKind.RESYNC})
    beat = await next_of(sub, {ChangeKind.HEARTBEAT})
    assert (beat.kind, feed.live) == (ChangeKind.HEARTBEAT, True)


async def test_lost_connection_resyncs(feed: ChangeFeed, database_url: str) -> None:
    """When the LISTEN connection is killed the feed reconnects and tells subscribers to reload."""
    sub = feed.subscribe()
    await next_of(sub, {ChangeKind.RESYNC})
    con = await asyncpg.connect(database_url)
    try:
        killed = await con.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query ILIKE 'LISTEN%' OR query = 'SELECT 1' AND pid <> pg_backend_pid()"
        )
    finally:
        await con.close()
    assert killed >= 1
    again = await next_of(sub, {ChangeKind.RESYNC})
    await notify(database_url, "after-reconnect")
    change = await next_of(sub, {ChangeKind.CHANGED})
    assert (again.kind, change.payload) == (ChangeKind.RESYNC, "after-reconnect")
