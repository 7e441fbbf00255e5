"""policysvc and keysvc as seen by the caches: loads and watch streams over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from services.common.errors import DomainError, InvalidArgument, NotFound, Unavailable
from services.common.server.protoconv import (
    change_kind_from_proto,
    epoch_seconds,
    format_from_proto,
)
from services.encryptsvc.cache import Change
from services.encryptsvc.encryption import Policy
from services.encryptsvc.envelope import RecipientKey

log = structlog.get_logger("encryptsvc.peers")


def _peer_error(exc: grpc.aio.AioRpcError, peer: str, destination_id: str) -> DomainError:
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"destination {destination_id} not found")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"{peer} refused destination_id: {exc.details()}")
    # Anything else means we cannot confirm the current state: fail closed, the caller retries.
    return Unavailable(f"{peer} could not be reached ({code.name}); retry shortly")


def _mismatch(peer: str, destination_id: str, what: str) -> Unavailable:
    """An answer to another question than was asked: a bug or an impostor, never to be used.

    The alarm line carries identifiers only (destination ids and kids are not PHI).
    """
    log.error("peer_answer_mismatch", alarm=True, peer=peer, asked=destination_id, answer=what)
    return Unavailable(
        f"{peer} answered about {what} when asked about destination {destination_id}; "
        "refusing to encrypt with it (operators are alerted); retry shortly"
    )


def _change(kind: int, destination_id: str, observed_at: Timestamp) -> Change:
    return Change(change_kind_from_proto(kind), destination_id, epoch_seconds(observed_at))


class PolicyClient:
    """GetPolicy and WatchPolicies."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = policy_pb2_grpc.PolicyServiceStub(channel)
        self._timeout = timeout

    async def load(self, destination_id: str) -> Policy:
        request = policy_pb2.GetPolicyRequest(destination_id=destination_id)
        try:
            response = await self._stub.GetPolicy(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(exc, "policysvc", destination_id) from None
        p = response.policy
        if p.destination_id != destination_id:
            raise _mismatch("policysvc", destination_id, f"destination {p.destination_id!r}")
        fmt = format_from_proto(p.format)
        if fmt is None:
            raise Unavailable(f"policysvc sent an unknown encryption format ({p.format})")
        return Policy(destination_id, p.version, p.enabled, fmt, tuple(p.fields))

    async def watch(self) -> AsyncIterator[Change]:
        async for message in self._stub.WatchPolicies(policy_pb2.WatchPoliciesRequest()):
            yield _change(message.kind, message.destination_id, message.observed_at)


class KeyClient:
    """GetPublicKey (the active version) and WatchKeys."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = keys_pb2_grpc.KeyServiceStub(channel)
        self._timeout = timeout

    async def load(self, destination_id: str) -> RecipientKey | None:
        request = keys_pb2.GetPublicKeyRequest(destination_id=destination_id)
        try:
            response = await self._stub.GetPublicKey(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return None  # no active key: the batch fails FAILED_PRECONDITION
            raise _peer_error(exc, "keysvc", destination_id) from None
        key = response.key
        if key.state != keys_pb2.KEY_STATE_ACTIVE or not key.public_key_pem:
            return None
        # Every ciphertext names its key by this kid, so it must be this destination's own.
        if key.destination_id != destination_id or key.kid != f"{destination_id}.v{key.version}":
            raise _mismatch(
                "keysvc", destination_id, f"key {key.kid!r} of destination {key.destination_id!r}"
            )
        return RecipientKey.from_pem(key.kid, key.public_key_pem)

    async def watch(self) -> AsyncIterator[Change]:
        async for message in self._stub.WatchKeys(keys_pb2.WatchKeysRequest()):
            yield _change(message.kind, message.destination_id, message.observed_at)
