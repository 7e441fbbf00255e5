"""Change-feed messages as the Watch* stream shape shared by WatchKeys and WatchPolicies."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from phiseal.common.v1 import common_pb2

from services.common.data.changefeed import FeedMessage
from services.common.server.protoconv import to_timestamp
from services.common.vocabulary import ChangeKind

Change = TypeVar("Change")


@dataclass(frozen=True)
class WatchEvent(Generic[Change]):
    """One message of a watch stream; ``change`` is set for CHANGED only."""

    kind: common_pb2.ChangeKind.ValueType
    observed_at: Timestamp
    change: Change | None = None


async def watch_events(
    messages: AsyncIterable[FeedMessage],
    parse: Callable[[str], Change | None],
    destination_of: Callable[[Change], str],
    wanted: Collection[str],
) -> AsyncIterator[WatchEvent[Change]]:
    """HEARTBEATs pass through, changes to ``wanted`` destinations (all when empty) become
    CHANGED, and a RESYNC or an unreadable payload becomes RESYNC."""
    async for message in messages:
        observed_at = to_timestamp(message.observed_at) or Timestamp()
        if message.kind is ChangeKind.HEARTBEAT:
            yield WatchEvent(common_pb2.CHANGE_KIND_HEARTBEAT, observed_at)
            continue
        change = parse(message.payload) if message.kind is ChangeKind.CHANGED else None
        if change is None:
            # Something may have been missed (or is unreadable): the watcher reloads everything.
            yield WatchEvent(common_pb2.CHANGE_KIND_RESYNC, observed_at)
            continue
        if not wanted or destination_of(change) in wanted:
            yield WatchEvent(common_pb2.CHANGE_KIND_CHANGED, observed_at, change)
