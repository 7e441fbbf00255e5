"""The caches: single flight, invalidation, the hard staleness bound, stream reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.common.errors import Unavailable
from services.common.vocabulary import ChangeKind
from services.encryptsvc.cache import Cache, Change


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Returns ``value`` (after ``gate`` opens) or raises ``error``; counts calls."""

    def __init__(self) -> None:
        self.value = "v1"
        self.calls = 0
        self.error: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, destination_id: str) -> str:
        self.calls += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return f"{destination_id}:{self.value}"


class Stream:
    """A watch stream the test feeds; ``fail()`` breaks the current connection."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Change | Exception] = asyncio.Queue()
        self.opened = 0

    async def __call__(self) -> AsyncIterator[Change]:
        self.opened += 1
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item


def _cache(
    loader: Loader, clock: FakeClock, stream: Stream | None = None, staleness: float = 5.0
) -> Cache[str]:
    return Cache(
        "test",
        loader,
        stream or Stream(),
        max_staleness=staleness,
        clock=clock,
        backoff=(0.001, 0.01),
    )


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_concurrent_misses_load_once() -> None:
    """A hundred concurrent requests for one destination cause exactly one load."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    loader.gate.clear()
    waiters = [asyncio.ensure_future(cache.get("d")) for _ in range(100)]
    await _settle()
    loader.gate.set()
    assert await asyncio.gather(*waiters) == ["d:v1"] * 100
    assert loader.calls == 1


async def test_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    """A load error goes to all waiters; the next request tries again."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    loader.error = Unavailable("down")
    with pytest.raises(Unavailable):
        await cache.get("d")
    loader.error = None
    assert await cache.get("d") == "d:v1"
    assert loader.calls == 2


async def test_entry_expires_past_the_bound_without_confirmation() -> None:
    """Without stream confirmation an entry is reused within the bound and reloaded after."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    await cache.get("d")
    clock.now += 4.9
    await cache.get("d")
    assert loader.calls == 1
    clock.now += 0.2
    loader.value = "v2"
    assert await cache.get("d") == "d:v2"


async def test_stale_entry_with_peer_down_is_unavailable() -> None:
    """Past the bound, if the reload fails, the caller gets UNAVAILABLE, never the old value."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    await cache.get("d")
    clock.now += 6
    loader.error = Unavailable("policysvc down")
    with pytest.raises(Unavailable):
        await cache.get("d")


async def test_load_slower_than_the_bound_is_unavailable() -> None:
    """A load that outlasts the bound (a peer timeout above it) is UNAVAILABLE, not served."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    loader.gate.clear()
    waiter = asyncio.ensure_future(cache.get("d"))
    await _settle()
    clock.now += 6
    loader.gate.set()
    with pytest.raises(Unavailable, match="staleness bound"):
        await waiter


async def test_heartbeats_keep_entries_fresh() -> None:
    """A heartbeat stamped within the bound confirms the entry: no reload."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    await cache.get("d")
    for _ in range(5):
        clock.now += 3
        cache.apply(Change(ChangeKind.HEARTBEAT, "", clock.now))
    assert await cache.get("d") == "d:v1"
    assert loader.calls == 1


async def test_server_clock_ahead_does_not_extend_freshness() -> None:
    """A heartbeat stamped in our future counts only as 'now'."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    await cache.get("d")
    cache.apply(Change(ChangeKind.HEARTBEAT, "", clock.now + 3600))
    clock.now += 6
    await cache.get("d")
    assert loader.calls == 2


async def test_changed_drops_one_destination_and_resync_drops_all() -> None:
    """CHANGED reloads only its destination; RESYNC reloads everything."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    await cache.get("a")
    await cache.get("b")
    loader.value = "v2"
    cache.apply(Change(ChangeKind.CHANGED, "a", clock.now))
    assert (await cache.get("a"), await cache.get("b")) == ("a:v2", "b:v1")
    cache.apply(Change(ChangeKind.RESYNC, "", clock.now))
    assert await cache.get("b") == "b:v2"


async def test_change_during_load_is_not_lost() -> None:
    """A load that began before a CHANGED is not cached; the next request reloads."""
    loader, clock = Loader(), FakeClock()
    cache = _cache(loader, clock)
    loader.gate.clear()
    first = asyncio.ensure_future(cache.get("d"))
    await _settle()
    cache.apply(Change(ChangeKind.CHANGED, "d", clock.now))
    loader.gate.set()
    await first
    loader.value = "v2"
    assert await cache.get("d") == "d:v2"


async def test_health_fails_until_the_first_resync() -> None:
    """A cache whose stream has not delivered its first RESYNC is not healthy, from the start."""
    loader, clock, stream = Loader(), FakeClock(), Stream()
    cache = _cache(loader, clock, stream)
    assert "has not delivered its first RESYNC" in (cache.health() or "")
    await cache.start()
    try:
        stream.queue.put_nowait(Change(ChangeKind.RESYNC, "", clock.now))
        await _settle()
        assert (cache.synced, cache.health()) == (True, None)
    finally:
        await cache.stop()


async def test_stream_reconnects_and_health_follows_it() -> None:
    """A broken stream is reopened; health fails only once it was down past the bound."""
    loader, clock, stream = Loader(), FakeClock(), Stream()
    cache = _cache(loader, clock, stream)
    await cache.start()
    try:
        stream.queue.put_nowait(Change(ChangeKind.RESYNC, "", clock.now))
        await _settle()
        assert (cache.connected, cache.health()) == (True, None)
        stream.queue.put_nowait(ConnectionError("gone"))
        await _settle()
        assert cache.connected is False
        assert cache.health() is None  # within the bound
        clock.now += 6
        assert "down for longer than 5s" in (cache.health() or "")
        for _ in range(50):
            if stream.opened >= 2:
                break
            await asyncio.sleep(0.005)
        assert stream.opened >= 2
    finally:
        await cache.stop()


async def test_a_connected_but_silent_stream_is_unhealthy_until_it_speaks() -> None:
    """A stream whose peer stalled (connection open, nothing sent) confirms nothing: past the
    bound health fails although connected, and the next heartbeat makes it healthy again."""
    loader, clock, stream = Loader(), FakeClock(), Stream()
    cache = _cache(loader, clock, stream)
    await cache.start()
    try:
        stream.queue.put_nowait(Change(ChangeKind.RESYNC, "", clock.now))
        await _settle()
        assert cache.health() is None
        clock.now += 6  # no heartbeat: the peer is stopped, its connection still open
        assert cache.connected is True
        assert "no confirmation of freshness for longer than 5s" in (cache.health() or "")
        stream.queue.put_nowait(Change(ChangeKind.HEARTBEAT, "", clock.now))
        await _settle()
        assert cache.health() is None
    finally:
        await cache.stop()
