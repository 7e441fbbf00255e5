"""WatchKeys: changes committed through any keysvc replica reach every watcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from tests.conftest import StartService
from tests.keysvc.conftest import Keys, serve_keys

CHANGED = common_pb2.CHANGE_KIND_CHANGED
Stream = AsyncIterable[keys_pb2.WatchKeysResponse]


async def next_changed(stream: Stream) -> keys_pb2.WatchKeysResponse:
    """The next CHANGED message, skipping heartbeats and resyncs."""
    async with asyncio.timeout(20):
        async for message in stream:
            if message.kind == CHANGED:
                return message
    raise AssertionError("the stream ended")


async def first_message(stream: Stream) -> keys_pb2.WatchKeysResponse:
    async with asyncio.timeout(20):
        async for message in stream:
            return message
    raise AssertionError("the stream ended")


async def test_a_change_through_one_replica_reaches_a_watcher_of_another(
    keys: Keys, start: StartService, database_url: str
) -> None:
    """Generate on replica A; a WatchKeys subscriber of replica B sees (destination, 1, ACTIVE)."""
    other = await serve_keys(start, database_url, keys.policy_service)
    watcher = keys_pb2_grpc.KeyServiceStub(other.channel())
    stream = watcher.WatchKeys(keys_pb2.WatchKeysRequest(destination_ids=[keys.destination_id]))
    first = await first_message(stream)
    assert first.kind == common_pb2.CHANGE_KIND_RESYNC
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    change = await next_changed(stream)
    stream.cancel()
    assert (change.destination_id, change.version, change.state) == (
        keys.destination_id,
        1,
        keys_pb2.KEY_STATE_ACTIVE,
    )
    assert change.HasField("observed_at")


async def test_watch_filters_by_destination(keys: Keys) -> None:
    """A watcher of destination B does not see A's change, and does see B's."""
    other = await keys.new_destination()
    stream = keys.stub.WatchKeys(keys_pb2.WatchKeysRequest(destination_ids=[other]))
    await first_message(stream)
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    await keys.stub.GenerateKeyPair(keys_pb2.GenerateKeyPairRequest(destination_id=other))
    change = await next_changed(stream)
    stream.cancel()
    assert (change.destination_id, change.version) == (other, 1)


async def test_rotation_announces_both_versions(keys: Keys) -> None:
    """An immediate rotation announces the retired old version and the active new one."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    stream = keys.stub.WatchKeys(keys_pb2.WatchKeysRequest())
    await first_message(stream)
    await keys.stub.RegenerateKeyPair(
        keys_pb2.RegenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    wanted = {(1, keys_pb2.KEY_STATE_RETIRED), (2, keys_pb2.KEY_STATE_ACTIVE)}
    seen: set[tuple[int, int]] = set()
    # The generate's own announcement may still be in flight when the watch starts, so the
    # stream can hold (1, ACTIVE) first: read until both rotation messages have arrived.
    while not wanted <= seen:
        change = await next_changed(stream)
        seen.add((change.version, change.state))
    stream.cancel()
    assert wanted <= seen
    assert seen <= wanted | {(1, keys_pb2.KEY_STATE_ACTIVE)}


async def test_heartbeats_confirm_the_feed_is_live(keys: Keys) -> None:
    """With nothing changing the stream still sends HEARTBEATs stamped observed_at."""
    stream = keys.stub.WatchKeys(keys_pb2.WatchKeysRequest())
    async with asyncio.timeout(20):
        async for message in stream:
            if message.kind == common_pb2.CHANGE_KIND_HEARTBEAT:
                break
    stream.cancel()
    assert message.HasField("observed_at")
