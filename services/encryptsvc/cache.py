"""Policy and public-key caches: single-flight loads, watch-stream invalidation, hard staleness.

An entry may be used only while it is known to be fresh: loaded less than ``max_staleness``
ago, or confirmed since by its watch stream (a message stamped T means every change committed
before T has been delivered, and was applied in order). Otherwise it is reloaded, and if the
reload fails the caller gets UNAVAILABLE: a possibly stale policy is never used, and a missing
one is never read as "no encryption".
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from services.common.errors import FailedPrecondition, Unavailable
from services.common.server.lifecycle import Background
from services.common.server.metrics import UNCOUNTED, Incrementing
from services.common.vocabulary import ChangeKind
from services.encryptsvc.encryption import Policy, Snapshot
from services.encryptsvc.envelope import RecipientKey

log = structlog.get_logger("encryptsvc.cache")

V = TypeVar("V")
Clock = Callable[[], float]


@dataclass(frozen=True)
class Change:
    """One watch-stream message; ``observed_at`` is the server's time in epoch seconds."""

    kind: ChangeKind
    destination_id: str
    observed_at: float


Watch = Callable[[], AsyncIterator[Change]]


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    loaded_at: float  # when the load began: the value is at least this fresh
    epoch: int


@dataclass(frozen=True)
class Lookups:
    """What ``Cache.get`` counts: a fresh entry, a load, a reload of an entry past the bound,
    and a refusal (UNAVAILABLE: nothing fresh could be had)."""

    hit: Incrementing = UNCOUNTED
    miss: Incrementing = UNCOUNTED
    expired: Incrementing = UNCOUNTED
    refused: Incrementing = UNCOUNTED


class Cache(Generic[V]):
    """Values per destination, loaded once however many callers wait, dropped on change."""

    def __init__(
        self,
        name: str,
        loader: Callable[[str], Awaitable[V]],
        watch: Watch,
        *,
        max_staleness: float,
        clock: Clock = time.time,
        backoff: tuple[float, float] = (0.05, 1.0),
        lookups: Lookups = Lookups(),
    ) -> None:
        self.name = name
        self._lookups = lookups
        self._loader = loader
        self._watch = watch
        self._max_staleness = max_staleness
        self._clock = clock
        self._backoff = backoff
        self._entries: dict[str, _Entry[V]] = {}
        self._inflight: dict[str, asyncio.Future[_Entry[V]]] = {}
        self._epoch = 0  # bumped by every invalidation: a load begun before it is not kept
        self.confirmed_at = 0.0  # the stream's last confirmation of freshness
        self.synced = False  # the stream has delivered a RESYNC since start-up
        self.connected = False
        self.loads = 0
        self._task = Background(f"watch-{name}", self.follow)

    def _fresh(self, entry: _Entry[V], now: float) -> bool:
        return now - max(entry.loaded_at, self.confirmed_at) <= self._max_staleness

    async def get(self, destination_id: str) -> V:
        """The value for ``destination_id``, fresh within the bound, or the loader's error."""
        entry = self._entries.get(destination_id)
        if entry is not None and self._fresh(entry, self._clock()):
            self._lookups.hit.inc()
            return entry.value
        (self._lookups.miss if entry is None else self._lookups.expired).inc()
        future = self._inflight.get(destination_id)
        if future is None:
            future = asyncio.ensure_future(self._load(destination_id))
            self._inflight[destination_id] = future
            future.add_done_callback(lambda done: self._forget(destination_id, done))
        # A caller that gives up must not cancel the load the other waiters share.
        try:
            loaded = await asyncio.shield(future)
        except Unavailable:
            self._lookups.refused.inc()
            raise
        # A load slower than the bound (ENCRYPTSVC_PEER_TIMEOUT_SECONDS may exceed it) returns
        # a value already older than the bound allows, unless the stream confirmed it meanwhile.
        if not self._fresh(loaded, self._clock()):
            self._lookups.refused.inc()
            raise Unavailable(
                f"loading the {self.name} took longer than the {self._max_staleness:g}s "
                "staleness bound; retry shortly"
            )
        return loaded.value

    def _forget(self, destination_id: str, done: asyncio.Future[_Entry[V]]) -> None:
        if self._inflight.get(destination_id) is done:
            del self._inflight[destination_id]
        if not done.cancelled():
            done.exception()  # retrieved: waiters re-raise it; nobody waiting is no error

    async def _load(self, destination_id: str) -> _Entry[V]:
        epoch = self._epoch
        started = self._clock()
        self.loads += 1
        entry = _Entry(await self._loader(destination_id), started, epoch)
        if epoch == self._epoch:
            self._entries[destination_id] = entry
        return entry

    def apply(self, change: Change) -> None:
        """Applies one watch message, in stream order."""
        if change.kind is ChangeKind.RESYNC:
            self.synced = True
            self._entries.clear()
            self._inflight.clear()
            self._epoch += 1
        elif change.kind is ChangeKind.CHANGED:
            self._entries.pop(change.destination_id, None)
            self._inflight.pop(change.destination_id, None)
            self._epoch += 1
        # Never trust a server clock that runs ahead of ours: that would stretch the bound.
        self.confirmed_at = max(self.confirmed_at, min(change.observed_at, self._clock()))

    def health(self) -> str | None:
        """None once the watch stream has delivered its first RESYNC and while it has confirmed
        freshness within the staleness bound; otherwise why not.

        A replica that has never heard from its stream cannot confirm that anything it loads
        stays fresh, so it does not call itself SERVING until the stream is live. Being
        connected is no confirmation: a peer stopped with its connection open (SIGSTOP, a hung
        process) sends nothing, and every batch is refused while health would say SERVING.
        """
        if not self.synced:
            return f"{self.name} watch stream has not delivered its first RESYNC yet"
        if self._clock() - self.confirmed_at <= self._max_staleness:
            return None
        if self.connected:
            return (
                f"{self.name} watch stream connected but no confirmation of freshness for "
                f"longer than {self._max_staleness:g}s (is the peer stalled?)"
            )
        return f"{self.name} watch stream down for longer than {self._max_staleness:g}s"

    async def follow(self) -> None:
        """Follows the watch stream forever, reconnecting with jittered exponential backoff."""
        first, ceiling = self._backoff
        delay = first
        while True:
            try:
                async for change in self._watch():
                    if not self.connected:
                        log.info("watch_connected", stream=self.name)
                    self.connected = True
                    delay = first
                    self.apply(change)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the stream: reconnect, entries age out
                if self.connected:
                    log.warning("watch_lost", stream=self.name, error_type=type(exc).__name__)
            self.connected = False
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter only
            delay = min(delay * 2, ceiling)

    async def start(self) -> None:
        await self._task.start()

    async def stop(self) -> None:
        await self._task.stop()


class DestinationCache:
    """The batch snapshot: a fresh policy and, when it encrypts, the fresh active key."""

    def __init__(self, policies: Cache[Policy], keys: Cache[RecipientKey | None]) -> None:
        self.policies = policies
        self.keys = keys

    async def snapshot(self, destination_id: str) -> Snapshot:
        policy = await self.policies.get(destination_id)
        if not policy.active:
            return Snapshot(policy, None)
        key = await self.keys.get(destination_id)
        if key is None:
            raise FailedPrecondition(
                f"encryption is enabled for destination {destination_id} but it has no active "
                "key; generate or import one with keysvc (GenerateKeyPair / ImportPublicKey)"
            )
        return Snapshot(policy, key)
