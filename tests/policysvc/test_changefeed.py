"""services.common.data.changefeed against a real PostgreSQL (WatchPolicies, WatchKeys)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest_asyncio

from services.common.data.changefeed import ChangeFeed, FeedMessage, Subscription
from services.common.vocabulary import ChangeKind

CHANNEL = "test_changes"


@pytest_asyncio.fixture
async def feed(database_url: str) -> AsyncIterator[ChangeFeed]:
    feed = ChangeFeed(database_url, CHANNEL, heartbeat_interval=0.1, application_name="feedtest")
    await feed.start()
    yield feed
    await feed.stop()


def messages(sub: Subscription) -> AsyncIterator[FeedMessage]:
    """One iterator per subscription: abandoning an iteration unsubscribes (as a watch does)."""
    return sub.__aiter__()


async def next_of(stream: AsyncIterator[FeedMessage], *kinds: ChangeKind) -> FeedMessage:
    """The next message of one of ``kinds`` (the timeout guards against hangs, not a timing)."""
    async with asyncio.timeout(30):
        while True:
            message = await anext(stream)
            if message.kind in kinds:
                return message


async def notify(database_url: str, payload: str) -> None:
    con = await asyncpg.connect(database_url)
    try:
        await con.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    finally:
        await con.close()


async def test_first_message_is_resync(feed: ChangeFeed) -> None:
    """A new subscription starts with a RESYNC."""
    sub = messages(feed.subscribe())
    first = await next_of(sub, ChangeKind.RESYNC, ChangeKind.CHANGED, ChangeKind.HEARTBEAT)
    assert first.kind is ChangeKind.RESYNC


async def test_notification_is_delivered_as_changed(feed: ChangeFeed, database_url: str) -> None:
    """A NOTIFY on the channel reaches every subscription with its payload."""
    one, two = messages(feed.subscribe()), messages(feed.subscribe())
    await next_of(one, ChangeKind.RESYNC)
    await next_of(two, ChangeKind.RESYNC)
    await notify(database_url, "hello")
    got = [(await next_of(s, ChangeKind.CHANGED)).payload for s in (one, two)]
    assert got == ["hello", "hello"]


async def test_heartbeats_follow_while_live(feed: ChangeFeed) -> None:
    """A live feed sends heartbeats and says it is live."""
    sub = messages(feed.subscribe())
    await next_of(sub, ChangeKind.HEARTBEAT)
    assert feed.live


async def test_killed_connection_is_followed_by_resync(feed: ChangeFeed, database_url: str) -> None:
    """After its connection is terminated the feed reconnects and sends RESYNC, then changes."""
    sub = messages(feed.subscribe())
    await next_of(sub, ChangeKind.RESYNC)
    con = await asyncpg.connect(database_url)
    try:
        await con.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'feedtest' AND datname = current_database()"
        )
        resync = await next_of(sub, ChangeKind.RESYNC)
        await con.execute("SELECT pg_notify($1, 'after')", CHANNEL)
    finally:
        await con.close()
    changed = await next_of(sub, ChangeKind.CHANGED)
    assert (resync.kind, changed.payload) == (ChangeKind.RESYNC, "after")


async def test_slow_subscriber_gets_resync_instead_of_backlog(database_url: str) -> None:
    """A subscription that falls max_backlog behind is told to RESYNC, not fed stale items."""
    feed = ChangeFeed(database_url, CHANNEL, heartbeat_interval=30, max_backlog=3)
    sub = feed.subscribe()
    for _ in range(4):
        sub.put(FeedMessage(ChangeKind.CHANGED, "x", datetime.now(UTC)))
    first = await next_of(messages(sub), ChangeKind.RESYNC, ChangeKind.CHANGED)
    assert first.kind is ChangeKind.RESYNC
