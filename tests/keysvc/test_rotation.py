"""RegenerateKeyPair and ConfirmKey through the gRPC API: immediate and confirmed rotation."""

from __future__ import annotations

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwcrypto import jwe, jwk
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from phiseal_dev.testing import eventually
from tests.conftest import StartService
from tests.keysvc.conftest import PERSON, Keys, audited, error_of, outbox, serve_keys

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
RSA = common_pb2.KEY_ALGORITHM_RSA_2048
LATER = keys_pb2.ACTIVATION_AFTER_CONFIRMATION


def _rsa_public(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _rsa_private(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def solve(challenge: str, private_key_pem: str) -> str:
    """What a customer does: decrypt the challenge JWE with the new private key."""
    token = jwe.JWE()
    token.deserialize(challenge, key=jwk.JWK.from_pem(private_key_pem.encode()))
    return str(token.payload.decode())


async def states(keys: Keys) -> dict[int, int]:
    reply = await keys.stub.ListKeyVersions(
        keys_pb2.ListKeyVersionsRequest(destination_id=keys.destination_id)
    )
    return {v.version: v.state for v in reply.versions}


def regenerate(keys: Keys, **fields: object) -> keys_pb2.RegenerateKeyPairRequest:
    return keys_pb2.RegenerateKeyPairRequest(destination_id=keys.destination_id, **fields)  # type: ignore[arg-type]


async def test_old_private_key_opens_old_ciphertext_and_not_new(keys: Keys) -> None:
    """After an immediate rotation v1's private key opens v1 ciphertext and cannot open v2's."""
    first = await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id, algorithm=RSA)
    )
    old_ciphertext = _rsa_public(first.key.public_key_pem).encrypt(b"E11.9", OAEP)
    second = await keys.stub.RegenerateKeyPair(regenerate(keys))
    new_ciphertext = _rsa_public(second.key.public_key_pem).encrypt(b"Z99.0", OAEP)
    old_private = _rsa_private(first.private_key.private_key_pem)
    assert old_private.decrypt(old_ciphertext, OAEP) == b"E11.9"
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography says only "Decryption failed"
        old_private.decrypt(new_ciphertext, OAEP)
    assert _rsa_private(second.private_key.private_key_pem).decrypt(new_ciphertext, OAEP) == (
        b"Z99.0"
    )


async def test_immediate_rotation_retires_the_previous_version(keys: Keys) -> None:
    """IMMEDIATE (the default): v2 active, v1 retired, same algorithm as v1, kid ".v2"."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id, algorithm=RSA)
    )
    reply = await keys.stub.RegenerateKeyPair(regenerate(keys))
    assert (reply.key.kid, reply.key.algorithm, reply.previous_version, reply.challenge) == (
        f"{keys.destination_id}.v2",
        RSA,
        1,
        "",
    )
    assert await states(keys) == {2: keys_pb2.KEY_STATE_ACTIVE, 1: keys_pb2.KEY_STATE_RETIRED}


async def test_regenerate_without_a_key_points_at_generate(keys: Keys) -> None:
    """RegenerateKeyPair before any key is FAILED_PRECONDITION naming GenerateKeyPair."""
    code, message = await error_of(keys.stub.RegenerateKeyPair(regenerate(keys)))
    assert (code, "GenerateKeyPair" in message) == (grpc.StatusCode.FAILED_PRECONDITION, True)


async def test_confirmation_flow_activates_only_with_the_right_answer(keys: Keys) -> None:
    """AFTER_CONFIRMATION: v2 pending while v1 encrypts; a wrong answer is PERMISSION_DENIED and
    leaves it pending; the decrypted challenge activates v2 and retires v1."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    reply = await keys.stub.RegenerateKeyPair(regenerate(keys, activation=LATER), metadata=PERSON)
    assert reply.key.state == keys_pb2.KEY_STATE_PENDING
    assert reply.key.HasField("confirm_by")
    active = await keys.stub.GetPublicKey(
        keys_pb2.GetPublicKeyRequest(destination_id=keys.destination_id)
    )
    assert active.key.version == 1

    wrong = keys_pb2.ConfirmKeyRequest(
        destination_id=keys.destination_id, version=2, challenge_plaintext="a guess"
    )
    code, _ = await error_of(keys.stub.ConfirmKey(wrong, metadata=PERSON))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert (await states(keys))[2] == keys_pb2.KEY_STATE_PENDING

    answer = solve(reply.challenge, reply.private_key.private_key_pem)
    confirmed = await keys.stub.ConfirmKey(
        keys_pb2.ConfirmKeyRequest(
            destination_id=keys.destination_id, version=2, challenge_plaintext=answer
        ),
        metadata=PERSON,
    )
    assert confirmed.key.state == keys_pb2.KEY_STATE_ACTIVE
    assert await states(keys) == {2: keys_pb2.KEY_STATE_ACTIVE, 1: keys_pb2.KEY_STATE_RETIRED}
    assert [e for e in await audited(keys.database_url) if "Confirmed" in e[0]] == [
        ("Destination Encryption Key Confirmed", "denied"),
        ("Destination Encryption Key Confirmed", "succeeded"),
    ]


async def test_rsa_challenge_is_rsa_oaep_256(keys: Keys) -> None:
    """For an RSA key the challenge JWE uses RSA-OAEP-256 / A256GCM and names the kid."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id, algorithm=RSA)
    )
    reply = await keys.stub.RegenerateKeyPair(regenerate(keys, activation=LATER))
    token = jwe.JWE()
    token.deserialize(
        reply.challenge, key=jwk.JWK.from_pem(reply.private_key.private_key_pem.encode())
    )
    assert (token.jose_header["alg"], token.jose_header["enc"], token.jose_header["kid"]) == (
        "RSA-OAEP-256",
        "A256GCM",
        reply.key.kid,
    )


async def test_confirming_a_missing_version_is_not_found(keys: Keys) -> None:
    """ConfirmKey for a version that does not exist is NOT_FOUND; version 0 is INVALID_ARGUMENT."""
    missing = keys_pb2.ConfirmKeyRequest(
        destination_id=keys.destination_id, version=7, challenge_plaintext="x"
    )
    no_version = keys_pb2.ConfirmKeyRequest(
        destination_id=keys.destination_id, challenge_plaintext="x"
    )
    assert (await error_of(keys.stub.ConfirmKey(missing)))[0] == grpc.StatusCode.NOT_FOUND
    assert (await error_of(keys.stub.ConfirmKey(no_version)))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_pending_key_expires_and_cannot_be_confirmed(
    keys: Keys, start: StartService, database_url: str
) -> None:
    """With a tiny TTL the pending version turns EXPIRED (swept and announced, the audit record
    naming the sweeper as its actor); confirming it then is FAILED_PRECONDITION and v1 stays
    active."""
    short = await serve_keys(
        start,
        database_url,
        keys.policy_service,
        KEYSVC_PENDING_KEY_TTL_SECONDS="0.3",
        KEYSVC_EXPIRY_SWEEP_SECONDS="0.1",
    )
    stub = keys_pb2_grpc.KeyServiceStub(short.channel())
    await stub.GenerateKeyPair(keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id))
    reply = await stub.RegenerateKeyPair(regenerate(keys, activation=LATER))
    answer = solve(reply.challenge, reply.private_key.private_key_pem)

    async def swept() -> bool:
        events = [e for e, _ in await audited(database_url)]
        return "Destination Encryption Key Expired" in events

    await eventually(swept, timeout=10, what="the sweep expires version 2")
    request = keys_pb2.ConfirmKeyRequest(
        destination_id=keys.destination_id, version=2, challenge_plaintext=answer
    )
    code, message = await error_of(stub.ConfirmKey(request))
    assert (code, "expired" in message) == (grpc.StatusCode.FAILED_PRECONDITION, True)
    assert await states(keys) == {2: keys_pb2.KEY_STATE_EXPIRED, 1: keys_pb2.KEY_STATE_ACTIVE}
    expired = [e for e in await outbox(database_url) if e["event_type"].endswith("Key Expired")]
    assert [(e["actor_user_id"], bool(e["request_id"])) for e in expired] == [
        ("service:keysvc-expiry-sweeper", True)
    ]


async def test_regenerate_retry_with_same_request_id_is_already_exists(keys: Keys) -> None:
    """A retried RegenerateKeyPair never hands out a second private key."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    first = await keys.stub.RegenerateKeyPair(regenerate(keys, request_id="rot-1"))
    code, message = await error_of(
        keys.stub.RegenerateKeyPair(regenerate(keys, request_id="rot-1"))
    )
    assert (code, first.key.kid in message) == (grpc.StatusCode.ALREADY_EXISTS, True)


async def test_regenerate_can_change_algorithm(keys: Keys) -> None:
    """An algorithm named on Regenerate replaces the previous one (X25519 → RSA 2048)."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    reply = await keys.stub.RegenerateKeyPair(regenerate(keys, algorithm=RSA))
    assert reply.key.algorithm == RSA
