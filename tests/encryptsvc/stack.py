"""The real control plane driven as a customer would: policysvc and keysvc through their gRPC APIs.

Used by encryptsvc's API tests, the end-to-end test and the benchmark: a workspace marked HIPAA
eligible, the fields reclassified yellow, a cloud-mode destination, a key pair from keysvc (its
private key kept here, as the customer keeps it) and encryption enabled through policysvc.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_decrypt import Keyring
from phiseal_dev.testing import person
from tests.encryptsvc.keys import KeyPair, PrivateKey

PERSON = person("user-1")
SAMPLE_LINES = [
    line
    for line in (Path(__file__).parent.parent / "data" / "sample_events.jsonl")
    .read_bytes()
    .splitlines()
    if line.strip()
]
SAMPLES: list[dict[str, Any]] = [orjson.loads(line) for line in SAMPLE_LINES]
# Nested objects, an array via [*], numbers, booleans, the long note: 15 paths.
FIELDS = [
    "context.ip",
    "context.traits.email",
    "context.traits.phone",
    "properties.allergy[*]",
    "properties.copay",
    "properties.diagnosis",
    "properties.email",
    "properties.medication",
    "properties.notes",
    "properties.procedure",
    "traits.address",
    "traits.birthdate",
    "traits.email",
    "traits.logins",
    "traits.verified",
]
# Added to policies by the change tests.
EXTRA_FIELDS = [
    "context.locale",
    "properties.clinic",
    "properties.title",
    "traits.gender",
    "traits.name",
]
RSA_2048 = common_pb2.KEY_ALGORITHM_RSA_2048
X25519 = common_pb2.KEY_ALGORITHM_X25519
HYBRID = common_pb2.KEY_ALGORITHM_MLKEM768_X25519
JWE = common_pb2.ENCRYPTION_FORMAT_JWE
SEGMENT = common_pb2.ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP


def load_private(pem: str, passphrase: str = "") -> PrivateKey:
    """The customer's side: the PKCS#8 PEM keysvc delivered, opened."""
    # The kit reads every key type keysvc delivers, X-Wing included (cryptography cannot).
    ring = Keyring()
    ring.add_pem(pem.encode(), passphrase=passphrase.encode() or None, source="delivered")
    return ring.entries[0].key


class Admin:
    """An operator calling policysvc and keysvc (as user-1, a development superuser)."""

    def __init__(self, policy: grpc.aio.Channel, keys: grpc.aio.Channel) -> None:
        self.policy = policy_pb2_grpc.PolicyServiceStub(policy)
        self.keys = keys_pb2_grpc.KeyServiceStub(keys)

    async def workspace(self, name: str = "Clinic") -> str:
        """A new workspace, marked HIPAA eligible."""
        reply = await self.policy.CreateWorkspace(
            policy_pb2.CreateWorkspaceRequest(name=name), metadata=PERSON
        )
        workspace_id = reply.workspace.workspace_id
        await self.policy.SetHipaaEligibility(
            policy_pb2.SetHipaaEligibilityRequest(
                workspace_id=workspace_id, eligible=True, baa_reference="BAA-2026-001"
            ),
            metadata=PERSON,
        )
        return workspace_id

    async def make_yellow(self, workspace_id: str, paths: Sequence[str]) -> list[str]:
        """Overrides to yellow every path the matchers do not already mark yellow."""
        reply = await self.policy.ListClassifications(
            policy_pb2.ListClassificationsRequest(
                workspace_id=workspace_id,
                paths=list(paths),
                page=common_pb2.PageRequest(page_size=500),
            ),
            metadata=PERSON,
        )
        yellow = {
            f.path for f in reply.fields if f.classification == policy_pb2.CLASSIFICATION_YELLOW
        }
        overridden = [p for p in paths if p not in yellow]
        for path in overridden:
            await self.policy.SetClassification(
                policy_pb2.SetClassificationRequest(
                    workspace_id=workspace_id,
                    override=policy_pb2.PathOverride(
                        path=path, classification=policy_pb2.CLASSIFICATION_YELLOW
                    ),
                ),
                metadata=PERSON,
            )
        return overridden

    async def destination(self, workspace_id: str, name: str = "Webhook") -> str:
        reply = await self.policy.CreateDestination(
            policy_pb2.CreateDestinationRequest(
                workspace_id=workspace_id,
                name=name,
                type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
            ),
            metadata=PERSON,
        )
        return reply.destination.destination_id

    async def generate(
        self, destination_id: str, algorithm: int = RSA_2048, passphrase: str = ""
    ) -> KeyPair:
        reply = await self.keys.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(
                destination_id=destination_id,
                algorithm=algorithm,  # type: ignore[arg-type]
                passphrase=passphrase,
            ),
            metadata=PERSON,
        )
        return KeyPair(reply.key.kid, load_private(reply.private_key.private_key_pem, passphrase))

    async def rotate(self, destination_id: str, algorithm: int = RSA_2048) -> KeyPair:
        """RegenerateKeyPair, activated at once."""
        reply = await self.keys.RegenerateKeyPair(
            keys_pb2.RegenerateKeyPairRequest(
                destination_id=destination_id,
                algorithm=algorithm,  # type: ignore[arg-type]
                activation=keys_pb2.ACTIVATION_IMMEDIATE,
            ),
            metadata=PERSON,
        )
        return KeyPair(reply.key.kid, load_private(reply.private_key.private_key_pem))

    async def enable(self, destination_id: str, fields: Sequence[str], fmt: int = JWE) -> int:
        """EnableEncryption; answers the new policy version."""
        current = await self.version(destination_id)
        reply = await self.policy.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(
                destination_id=destination_id,
                fields=list(fields),
                format=fmt,  # type: ignore[arg-type]
                expected_version=current,
            ),
            metadata=PERSON,
        )
        return reply.policy.version

    async def update(
        self, destination_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> int:
        current = await self.version(destination_id)
        reply = await self.policy.UpdateEncryptedFields(
            policy_pb2.UpdateEncryptedFieldsRequest(
                destination_id=destination_id,
                add=list(add),
                remove=list(remove),
                expected_version=current,
            ),
            metadata=PERSON,
        )
        return reply.policy.version

    async def disable(self, destination_id: str) -> int:
        current = await self.version(destination_id)
        reply = await self.policy.DisableEncryption(
            policy_pb2.DisableEncryptionRequest(
                destination_id=destination_id,
                expected_version=current,
                confirm_destination_id=destination_id,
            ),
            metadata=PERSON,
        )
        return reply.policy.version

    async def version(self, destination_id: str) -> int:
        reply = await self.policy.GetPolicy(
            policy_pb2.GetPolicyRequest(destination_id=destination_id), metadata=PERSON
        )
        return reply.policy.version

    async def encrypting_destination(
        self,
        workspace_id: str,
        fields: Sequence[str] = FIELDS,
        *,
        algorithm: int = RSA_2048,
        fmt: int = JWE,
        name: str = "Webhook",
        passphrase: str = "",
    ) -> tuple[str, KeyPair]:
        """A new destination with a key pair and encryption enabled on ``fields``."""
        destination_id = await self.destination(workspace_id, name)
        key = await self.generate(destination_id, algorithm, passphrase)
        await self.enable(destination_id, fields, fmt)
        return destination_id, key


async def health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return int(reply.status)


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float) -> float:
    """Polls ``predicate`` until true; fails after ``within`` seconds. Answers the time taken."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < within, "the condition did not hold in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def wait_serving(channel: grpc.aio.Channel, within: float = 10) -> None:
    async def serving() -> bool:
        try:
            return bool(await health(channel) == health_pb2.HealthCheckResponse.SERVING)
        except grpc.aio.AioRpcError:
            return False

    await wait_for(serving, within)
