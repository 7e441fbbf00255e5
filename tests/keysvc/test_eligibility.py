"""Keys only for cloud-mode event-stream destinations of HIPAA-eligible workspaces."""

from __future__ import annotations

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from phiseal.keys.v1 import keys_pb2
from phiseal.policy.v1 import policy_pb2

from tests.keysvc.conftest import Keys, error_of


async def _destination(keys: Keys, type_: int) -> str:
    reply = await keys.policy.CreateDestination(
        policy_pb2.CreateDestinationRequest(
            workspace_id=keys.workspace_id,
            name="Other",
            type=type_,  # type: ignore[arg-type]
        )
    )
    return reply.destination.destination_id


async def _ineligible(keys: Keys) -> None:
    await keys.policy.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(workspace_id=keys.workspace_id, eligible=False)
    )


def _x25519_pem() -> str:
    public = x25519.X25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


async def test_generate_for_a_device_mode_destination_is_refused(keys: Keys) -> None:
    """A device-mode destination gets no key: FAILED_PRECONDITION naming the rule."""
    destination_id = await _destination(keys, policy_pb2.DESTINATION_TYPE_EVENT_STREAM_DEVICE_MODE)
    code, message = await error_of(
        keys.stub.GenerateKeyPair(keys_pb2.GenerateKeyPairRequest(destination_id=destination_id))
    )
    versions = await keys.stub.ListKeyVersions(
        keys_pb2.ListKeyVersionsRequest(destination_id=destination_id)
    )
    assert (code, "event-stream cloud-mode" in message) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        True,
    )
    assert list(versions.versions) == []


async def test_generate_in_an_ineligible_workspace_is_refused(keys: Keys) -> None:
    """A workspace not marked HIPAA eligible gets no key; the message names SetHipaaEligibility."""
    await _ineligible(keys)
    code, message = await error_of(
        keys.stub.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
        )
    )
    assert (code, "SetHipaaEligibility" in message) == (grpc.StatusCode.FAILED_PRECONDITION, True)


async def test_import_for_a_warehouse_is_refused(keys: Keys) -> None:
    """ImportPublicKey follows the same rule as GenerateKeyPair."""
    destination_id = await _destination(keys, policy_pb2.DESTINATION_TYPE_WAREHOUSE)
    code, _ = await error_of(
        keys.stub.ImportPublicKey(
            keys_pb2.ImportPublicKeyRequest(
                destination_id=destination_id, public_key_pem=_x25519_pem()
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_regenerate_after_eligibility_is_withdrawn_is_refused(keys: Keys) -> None:
    """Once the workspace is no longer eligible, no new key version is made."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    await _ineligible(keys)
    code, _ = await error_of(
        keys.stub.RegenerateKeyPair(
            keys_pb2.RegenerateKeyPairRequest(destination_id=keys.destination_id)
        )
    )
    versions = await keys.stub.ListKeyVersions(
        keys_pb2.ListKeyVersionsRequest(destination_id=keys.destination_id)
    )
    assert (code, len(versions.versions)) == (grpc.StatusCode.FAILED_PRECONDITION, 1)
