"""A fake policysvc/keysvc on the port encryptsvc calls: a wrong service, or a right one that
answers another question than it was asked. Real gRPC, real mutual TLS with a session cert."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_dev.testing import session_secrets
from services.common.security.tls import mtls_server_credentials


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


@dataclass
class Answers:
    """What the impostor says; each function gets the destination asked about."""

    policy: Callable[[str], policy_pb2.EncryptionPolicy] = lambda d: policy_pb2.EncryptionPolicy(
        destination_id=d, version=2, enabled=False
    )
    key: Callable[[str], keys_pb2.KeyVersion] | None = None
    asked: list[str] = field(default_factory=list)


class _Policies(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self, answers: Answers) -> None:
        self._answers = answers

    async def GetPolicy(self, request: Any, context: Any) -> policy_pb2.GetPolicyResponse:
        self._answers.asked.append(request.destination_id)
        return policy_pb2.GetPolicyResponse(policy=self._answers.policy(request.destination_id))

    async def WatchPolicies(
        self, request: Any, context: Any
    ) -> AsyncIterator[policy_pb2.WatchPoliciesResponse]:
        yield policy_pb2.WatchPoliciesResponse(
            kind=common_pb2.CHANGE_KIND_RESYNC, observed_at=_now()
        )
        while True:
            await asyncio.sleep(0.1)
            yield policy_pb2.WatchPoliciesResponse(
                kind=common_pb2.CHANGE_KIND_HEARTBEAT, observed_at=_now()
            )


class _Keys(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, answers: Answers) -> None:
        self._answers = answers

    async def GetPublicKey(self, request: Any, context: Any) -> keys_pb2.GetPublicKeyResponse:
        self._answers.asked.append(request.destination_id)
        assert self._answers.key is not None
        return keys_pb2.GetPublicKeyResponse(key=self._answers.key(request.destination_id))

    async def WatchKeys(
        self, request: Any, context: Any
    ) -> AsyncIterator[keys_pb2.WatchKeysResponse]:
        yield keys_pb2.WatchKeysResponse(kind=common_pb2.CHANGE_KIND_RESYNC, observed_at=_now())
        while True:
            await asyncio.sleep(0.1)
            yield keys_pb2.WatchKeysResponse(
                kind=common_pb2.CHANGE_KIND_HEARTBEAT, observed_at=_now()
            )


async def serve_impostor(port: int, identity: str, answers: Answers) -> grpc.aio.Server:
    """Serves PolicyService and KeyService on ``port`` with ``identity``'s session certificate,
    demanding a client certificate from our CA as a real peer port does."""
    server = grpc.aio.server()
    # Only the RPCs encryptsvc calls are served; the rest stay abstract (UNIMPLEMENTED).
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(_Policies(answers), server)  # type: ignore[abstract]
    keys_pb2_grpc.add_KeyServiceServicer_to_server(_Keys(answers), server)  # type: ignore[abstract]
    credentials = mtls_server_credentials(session_secrets().files(identity))
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    return server
