"""keysvc authorization beyond the per-RPC checks: who may watch which keys."""

from __future__ import annotations

import asyncio

import grpc
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from phiseal_dev.testing import session_secrets
from services.common.security.auth import Role
from tests.keysvc.conftest import Keys


async def first_code(call: grpc.aio.UnaryStreamCall) -> grpc.StatusCode | int:  # type: ignore[type-arg]
    """The first message's kind, or the status code the stream fails with."""
    try:
        async with asyncio.timeout(10):
            async for message in call:
                call.cancel()
                kind: int = message.kind
                return kind
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_a_person_watches_only_named_destinations_of_their_workspaces(keys: Keys) -> None:
    """WatchKeys: a viewer's unfiltered watch and a watch of another workspace's destination
    are PERMISSION_DENIED; their own destination streams; encryptsvc (mTLS) watches all."""
    secrets = session_secrets()
    viewer = keys_pb2_grpc.KeyServiceStub(
        keys.service.channel(token=secrets.token("vera", {keys.workspace_id: [Role.VIEWER]}))
    )
    stranger = keys_pb2_grpc.KeyServiceStub(
        keys.service.channel(token=secrets.token("sam", {"ws_elsewhere": [Role.ADMIN]}))
    )
    encryptsvc = keys_pb2_grpc.KeyServiceStub(keys.service.peer_channel("encryptsvc"))
    mine = keys_pb2.WatchKeysRequest(destination_ids=[keys.destination_id])
    outcomes = [
        await first_code(viewer.WatchKeys(keys_pb2.WatchKeysRequest())),
        await first_code(stranger.WatchKeys(mine)),
        await first_code(viewer.WatchKeys(mine)),
        await first_code(encryptsvc.WatchKeys(keys_pb2.WatchKeysRequest())),
    ]
    assert outcomes == [
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.PERMISSION_DENIED,
        common_pb2.CHANGE_KIND_RESYNC,
        common_pb2.CHANGE_KIND_RESYNC,
    ]
