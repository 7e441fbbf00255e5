"""A LISTEN/NOTIFY change feed fanned out to in-process watchers (WatchKeys, WatchPolicies).

NOTIFY loses whatever is sent while nobody listens, so every (re)connection starts with a
RESYNC that tells watchers to reload in full. While the connection is healthy the feed emits
HEARTBEATs: a heartbeat stamped T means every change committed before T has been delivered,
which is what lets a cache bound its staleness.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog

from services.common.server.lifecycle import Background
from services.common.vocabulary import ChangeKind

log = structlog.get_logger("changefeed")


def _set_event(event: asyncio.Event, _con: object) -> None:
    event.set()


@dataclass(frozen=True)
class FeedMessage:
    kind: ChangeKind
    payload: str  # the NOTIFY payload for CHANGED, empty otherwise
    observed_at: datetime


class Subscription:
    """One watcher's queue. A watcher that falls too far behind gets a RESYNC instead.

    Iterate it with ``async for``; ``close()`` (or leaving ``with``) unsubscribes.
    """

    def __init__(self, feed: ChangeFeed, max_backlog: int) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[FeedMessage] = asyncio.Queue()
        self._max_backlog = max_backlog

    def put(self, message: FeedMessage) -> None:
        if self._queue.qsize() >= self._max_backlog:
            while not self._queue.empty():
                self._queue.get_nowait()
            message = FeedMessage(ChangeKind.RESYNC, "", message.observed_at)
        self._queue.put_nowait(message)

    def close(self) -> None:
        self._feed._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> FeedMessage:
        return await self._queue.get()


class ChangeFeed:
    """Keeps one dedicated connection LISTENing on ``channel``; reconnects with backoff."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        heartbeat_interval: float = 1.0,
        max_backlog: int = 10_000,
        application_name: str = "",
    ) -> None:
        self._url = url
        self._channel = channel
        # Names the LISTEN connection in pg_stat_activity, so operators (and tests) can find it.
        self._application_name = application_name or f"changefeed:{channel}"
        self._interval = heartbeat_interval
        self._max_backlog = max_backlog
        self._subscribers: set[Subscription] = set()
        self._task = Background(f"changefeed-{channel}", self._run)
        self._live = False

    @property
    def live(self) -> bool:
        """True while the LISTEN connection is up and answering."""
        return self._live

    def subscribe(self) -> Subscription:
        """A new watcher; its first message is a RESYNC once the feed is live."""
        sub = Subscription(self, self._max_backlog)
        self._subscribers.add(sub)
        if self._live:
            sub.put(FeedMessage(ChangeKind.RESYNC, "", datetime.now(UTC)))
        return sub

    def _broadcast(self, message: FeedMessage) -> None:
        for sub in list(self._subscribers):
            sub.put(message)

    def _on_notify(self, _con: object, _pid: int, _channel: str, payload: object) -> None:
        self._broadcast(FeedMessage(ChangeKind.CHANGED, str(payload), datetime.now(UTC)))

    async def start(self) -> None:
        await self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            con: asyncpg.Connection | None = None
            try:
                con = await asyncpg.connect(
                    self._url,
                    timeout=5,
                    server_settings={"application_name": self._application_name},
                )
                lost = asyncio.Event()
                # Wakes the loop as soon as the server drops the connection, rather than at the
                # next heartbeat: until the RESYNC, watchers would trust a dead feed.
                con.add_termination_listener(functools.partial(_set_event, lost))
                await con.add_listener(self._channel, self._on_notify)
                self._live = True
                delay = 0.1
                log.info("changefeed_listening", channel=self._channel)
                # Anything committed before LISTEN took effect is covered by the reload.
                self._broadcast(FeedMessage(ChangeKind.RESYNC, "", datetime.now(UTC)))
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._interval)
                    if lost.is_set():
                        raise ConnectionResetError("LISTEN connection closed by the server")
                    sent_at = datetime.now(UTC)
                    # Notifications precede a query's answer on the connection, so once this
                    # returns, every change committed before sent_at has been dispatched.
                    await con.fetchval("SELECT 1", timeout=max(self._interval, 1.0))
                    self._broadcast(FeedMessage(ChangeKind.HEARTBEAT, "", sent_at))
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                if self._live:
                    log.warning(
                        "changefeed_lost", channel=self._channel, error_type=type(exc).__name__
                    )
                self._live = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                self._live = False
                if con is not None:
                    con.terminate()
