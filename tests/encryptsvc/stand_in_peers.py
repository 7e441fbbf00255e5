"""In-memory stand-ins for policysvc and keysvc over real gRPC, for encryptsvc's API tests.

They serve exactly what encryptsvc consumes (GetPolicy, WatchPolicies, GetPublicKey, WatchKeys)
with the streams' documented semantics: RESYNC first, CHANGED per change, HEARTBEAT while live.
``outage()`` makes every call fail UNAVAILABLE and ends open streams, as a stopped peer would.
Used until the real services land on main, and by the benchmark (no database needed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


@dataclass
class _Feed:
    queues: set[asyncio.Queue[tuple[int, str]]] = field(default_factory=set)

    def publish(self, kind: int, destination_id: str = "") -> None:
        for queue in self.queues:
            queue.put_nowait((kind, destination_id))


class StandInPeers(policy_pb2_grpc.PolicyServiceServicer, keys_pb2_grpc.KeyServiceServicer):
    """policysvc + keysvc stand-ins on one loopback server."""

    def __init__(self, heartbeat: float = 0.1) -> None:
        self.policies: dict[str, policy_pb2.EncryptionPolicy] = {}
        self.keys: dict[str, keys_pb2.KeyVersion] = {}
        self.down = False
        self.calls = 0
        self._heartbeat = heartbeat
        self._policy_feed = _Feed()
        self._key_feed = _Feed()
        self._server = grpc.aio.server()
        self.port = 0

    @property
    def watchers(self) -> int:
        """Open watch streams (policy and key streams counted together)."""
        return len(self._policy_feed.queues) + len(self._key_feed.queues)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(self, self._server)
        keys_pb2_grpc.add_KeyServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(0)

    # --- state changes, as the real services' RPCs would make them ---

    def set_policy(
        self,
        destination_id: str,
        fields: list[str],
        *,
        enabled: bool = True,
        fmt: common_pb2.EncryptionFormat.ValueType = common_pb2.ENCRYPTION_FORMAT_JWE,
    ) -> int:
        old = self.policies.get(destination_id)
        version = (old.version if old else 0) + 1
        self.policies[destination_id] = policy_pb2.EncryptionPolicy(
            destination_id=destination_id,
            version=version,
            enabled=enabled,
            format=fmt,
            fields=sorted(fields),
        )
        self._policy_feed.publish(common_pb2.CHANGE_KIND_CHANGED, destination_id)
        return version

    def set_key(self, destination_id: str, public_pem: str) -> str:
        old = self.keys.get(destination_id)
        version = (old.version if old else 0) + 1
        kid = f"{destination_id}.v{version}"
        self.keys[destination_id] = keys_pb2.KeyVersion(
            destination_id=destination_id,
            kid=kid,
            version=version,
            state=keys_pb2.KEY_STATE_ACTIVE,
            public_key_pem=public_pem,
        )
        self._key_feed.publish(common_pb2.CHANGE_KIND_CHANGED, destination_id)
        return kid

    def outage(self) -> None:
        self.down = True
        for feed in (self._policy_feed, self._key_feed):
            feed.publish(-1)

    def recover(self) -> None:
        self.down = False

    # --- RPCs ---

    async def _check(self, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        self.calls += 1
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in peer is down")

    async def GetPolicy(
        self,
        request: policy_pb2.GetPolicyRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> policy_pb2.GetPolicyResponse:
        await self._check(context)
        policy = self.policies.get(request.destination_id)
        if policy is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such destination")
        return policy_pb2.GetPolicyResponse(policy=policy)

    async def GetPublicKey(
        self,
        request: keys_pb2.GetPublicKeyRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> keys_pb2.GetPublicKeyResponse:
        await self._check(context)
        key = self.keys.get(request.destination_id)
        if key is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no active key")
        return keys_pb2.GetPublicKeyResponse(key=key)

    async def _stream(
        self,
        feed: _Feed,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> asyncio.Queue[tuple[int, str]]:
        await self._check(context)
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        feed.queues.add(queue)
        queue.put_nowait((common_pb2.CHANGE_KIND_RESYNC, ""))
        return queue

    async def _follow(
        self,
        feed: _Feed,
        queue: asyncio.Queue[tuple[int, str]],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> tuple[int, str]:
        try:
            return await asyncio.wait_for(queue.get(), self._heartbeat)
        except TimeoutError:
            return common_pb2.CHANGE_KIND_HEARTBEAT, ""

    async def WatchPolicies(  # type: ignore[override]
        self,
        request: policy_pb2.WatchPoliciesRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> None:
        queue = await self._stream(self._policy_feed, context)
        try:
            while True:
                kind, destination_id = await self._follow(self._policy_feed, queue, context)
                if kind < 0 or self.down:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in peer is down")
                await context.write(
                    policy_pb2.WatchPoliciesResponse(
                        kind=kind,  # type: ignore[arg-type]
                        destination_id=destination_id,
                        observed_at=_now(),
                    )
                )
        finally:
            self._policy_feed.queues.discard(queue)

    async def WatchKeys(  # type: ignore[override]
        self,
        request: keys_pb2.WatchKeysRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> None:
        queue = await self._stream(self._key_feed, context)
        try:
            while True:
                kind, destination_id = await self._follow(self._key_feed, queue, context)
                if kind < 0 or self.down:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in peer is down")
                await context.write(
                    keys_pb2.WatchKeysResponse(
                        kind=kind,  # type: ignore[arg-type]
                        destination_id=destination_id,
                        observed_at=_now(),
                    )
                )
        finally:
            self._key_feed.queues.discard(queue)
