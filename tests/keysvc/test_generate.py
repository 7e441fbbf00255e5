"""GenerateKeyPair through the gRPC API: key forms, one-time delivery, passphrases, idempotency."""

from __future__ import annotations

import asyncio
import hashlib
import json

import asyncpg
import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from jwcrypto import jwe, jwk
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2

from tests.keysvc.conftest import (
    PASSPHRASE,
    PERSON,
    Keys,
    asn1,
    audited,
    error_of,
    openssl_opens,
    outbox,
)

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def generate(keys: Keys, **fields: object) -> keys_pb2.GenerateKeyPairRequest:
    return keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id, **fields)  # type: ignore[arg-type]


async def test_default_is_x25519_with_kid_jwk_and_fingerprint(keys: Keys) -> None:
    """With no algorithm the pair is X25519, version 1, active, named "<destination>.v1"."""
    reply = await keys.stub.GenerateKeyPair(generate(keys), metadata=PERSON)
    key = reply.key
    public = serialization.load_pem_public_key(key.public_key_pem.encode())
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert isinstance(public, x25519.X25519PublicKey)
    assert (f"{keys.destination_id}.v1", 1) == (key.kid, key.version)
    assert key.algorithm == common_pb2.KEY_ALGORITHM_X25519
    assert key.state == keys_pb2.KEY_STATE_ACTIVE
    assert key.origin == keys_pb2.KEY_ORIGIN_GENERATED
    assert keys.workspace_id == key.workspace_id
    assert hashlib.sha256(der).hexdigest() == key.fingerprint_sha256
    assert key.created_by == "user-1"
    assert {
        "kty": "OKP",
        "crv": "X25519",
        "x": jwk.JWK.from_pyca(public).export_public(as_dict=True)["x"],
        "use": "enc",
        "alg": "ECDH-ES+A256KW",
        "kid": key.kid,
    } == json.loads(key.public_key_jwk)


async def test_x25519_private_key_opens_a_jwe_made_to_the_jwk(keys: Keys) -> None:
    """A JWE encrypted by jwcrypto to the returned JWK decrypts with the delivered private key."""
    reply = await keys.stub.GenerateKeyPair(generate(keys))
    token = jwe.JWE(
        b'{"diagnosis":"E11.9"}',
        protected=json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": reply.key.kid}),
    )
    token.add_recipient(jwk.JWK.from_json(reply.key.public_key_jwk))
    compact = token.serialize(compact=True)
    private = jwk.JWK.from_pem(reply.private_key.private_key_pem.encode())
    opened = jwe.JWE()
    opened.deserialize(compact, key=private)
    assert opened.payload == b'{"diagnosis":"E11.9"}'
    assert reply.private_key.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert not reply.private_key.passphrase_protected


async def test_rsa_private_key_opens_rsa_oaep_sha256(keys: Keys) -> None:
    """RSA 2048: the delivered private key decrypts RSA-OAEP-SHA256 made with the public key."""
    reply = await keys.stub.GenerateKeyPair(
        generate(keys, algorithm=common_pb2.KEY_ALGORITHM_RSA_2048)
    )
    public = serialization.load_pem_public_key(reply.key.public_key_pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    ciphertext = public.encrypt(b"jane.doe@example.com", OAEP)
    private = serialization.load_pem_private_key(
        reply.private_key.private_key_pem.encode(), password=None
    )
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.decrypt(ciphertext, OAEP) == b"jane.doe@example.com"
    assert (public.key_size, reply.key.algorithm) == (2048, common_pb2.KEY_ALGORITHM_RSA_2048)
    assert {"kty": "RSA", "use": "enc", "alg": "RSA-OAEP-256", "kid": reply.key.kid} == {
        k: v for k, v in json.loads(reply.key.public_key_jwk).items() if k not in ("n", "e")
    }


async def test_second_generate_points_at_regenerate(keys: Keys) -> None:
    """A destination with a key refuses GenerateKeyPair with FAILED_PRECONDITION."""
    await keys.stub.GenerateKeyPair(generate(keys))
    code, message = await error_of(keys.stub.GenerateKeyPair(generate(keys), metadata=PERSON))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "RegenerateKeyPair" in message


async def test_duplicate_generate_is_audited_as_failed(keys: Keys) -> None:
    """The success and the refused duplicate both land in the outbox, with their outcomes."""
    await keys.stub.GenerateKeyPair(generate(keys), metadata=PERSON)
    await error_of(keys.stub.GenerateKeyPair(generate(keys), metadata=PERSON))
    assert await audited(keys.database_url) == [
        ("Destination Encryption Keys Generated", "succeeded"),
        ("Destination Encryption Keys Generated", "failed"),
    ]


async def test_retry_with_same_request_id_never_delivers_a_second_key(keys: Keys) -> None:
    """The same request id again answers ALREADY_EXISTS naming the kid, with no private key."""
    first = await keys.stub.GenerateKeyPair(generate(keys, request_id="req-42"))
    code, message = await error_of(keys.stub.GenerateKeyPair(generate(keys, request_id="req-42")))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert first.key.kid in message
    assert "cannot be shown again" in message


async def test_request_id_metadata_is_the_default_idempotency_key(keys: Keys) -> None:
    """Without request_id the x-request-id header is the idempotency key."""
    metadata = (("x-request-id", "retry-me-1"),)
    await keys.stub.GenerateKeyPair(generate(keys), metadata=metadata)
    code, _ = await error_of(keys.stub.GenerateKeyPair(generate(keys), metadata=metadata))
    assert code == grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_generates_make_exactly_one_key(keys: Keys) -> None:
    """Two simultaneous GenerateKeyPair calls for one destination: one succeeds."""
    calls = [keys.stub.GenerateKeyPair(generate(keys)) for _ in range(2)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    codes = sorted(o.code().name if isinstance(o, grpc.aio.AioRpcError) else "OK" for o in outcomes)
    assert codes == ["FAILED_PRECONDITION", "OK"]
    versions = await keys.stub.ListKeyVersions(
        keys_pb2.ListKeyVersionsRequest(destination_id=keys.destination_id)
    )
    assert len(versions.versions) == 1


async def test_unknown_destination_is_not_found(keys: Keys) -> None:
    """A destination policysvc does not know answers NOT_FOUND."""
    request = keys_pb2.GenerateKeyPairRequest(destination_id="dst_missing")
    code, message = await error_of(keys.stub.GenerateKeyPair(request))
    assert (code, "dst_missing" in message) == (grpc.StatusCode.NOT_FOUND, True)


async def test_missing_destination_id_is_invalid(keys: Keys) -> None:
    """An empty destination_id is INVALID_ARGUMENT."""
    code, _ = await error_of(keys.stub.GenerateKeyPair(keys_pb2.GenerateKeyPairRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_policysvc_down_is_unavailable(keys: Keys) -> None:
    """With policysvc unreachable nothing is created: UNAVAILABLE (fail closed)."""
    await keys.policy_service.stop()
    code, _ = await error_of(keys.stub.GenerateKeyPair(generate(keys)))
    con = await asyncpg.connect(keys.database_url)
    try:
        stored = await con.fetchval("SELECT count(*) FROM keysvc.key_versions")
    finally:
        await con.close()
    assert (code, stored, await outbox(keys.database_url)) == (grpc.StatusCode.UNAVAILABLE, 0, [])


async def test_scrypt_is_the_default_passphrase_kdf(keys: Keys) -> None:
    """A passphrase alone gives PBES2/scrypt N=2^14 r=8 p=5, as OpenSSL's parser reads it."""
    reply = await keys.stub.GenerateKeyPair(generate(keys, passphrase=PASSPHRASE))
    delivery = reply.private_key
    structure = asn1(delivery.private_key_pem)
    after_kdf = structure[structure.index("scrypt") + 2 :]
    assert (
        delivery.passphrase_protected,
        delivery.kdf,
        delivery.kdf_cost,
    ) == (True, keys_pb2.PASSPHRASE_KDF_SCRYPT, 16384)
    assert [s for s in structure if s in ("PBES2", "scrypt")] == ["PBES2", "scrypt"]
    assert after_kdf[:3] == ["4000", "08", "05"]
    assert "aes-256-cbc" in structure


async def test_pbkdf2_uses_600000_iterations(keys: Keys) -> None:
    """PBKDF2-SHA256 on request: the DER says 600,000 iterations and HMAC-SHA256."""
    reply = await keys.stub.GenerateKeyPair(
        generate(keys, passphrase=PASSPHRASE, passphrase_kdf=keys_pb2.PASSPHRASE_KDF_PBKDF2_SHA256)
    )
    structure = asn1(reply.private_key.private_key_pem)
    iterations = int(structure[structure.index("PBKDF2") + 2], 16)
    assert iterations >= 600_000
    assert "hmacWithSHA256" in structure
    assert (
        reply.private_key.kdf,
        reply.private_key.kdf_cost,
    ) == (keys_pb2.PASSPHRASE_KDF_PBKDF2_SHA256, 600_000)


async def test_protected_key_opens_with_the_passphrase_only(keys: Keys) -> None:
    """cryptography and openssl open it with the passphrase and refuse without or with another."""
    reply = await keys.stub.GenerateKeyPair(generate(keys, passphrase=PASSPHRASE))
    pem = reply.private_key.private_key_pem
    opened = serialization.load_pem_private_key(pem.encode(), PASSPHRASE.encode())
    refused = []
    for password in (None, b"Tide-Pool 42 walrus"):
        try:
            serialization.load_pem_private_key(pem.encode(), password)
        except (TypeError, ValueError):
            refused.append(password)
    assert isinstance(opened, x25519.X25519PrivateKey)
    assert refused == [None, b"Tide-Pool 42 walrus"]
    assert (openssl_opens(pem, PASSPHRASE), openssl_opens(pem, "nope-nope-42")) == (True, False)
    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")


async def test_weak_passphrases_are_refused_without_echo(keys: Keys) -> None:
    """Short, single-class and common passphrases: INVALID_ARGUMENT saying why, never echoing."""
    answers = {}
    for weak in ("Short-1", "alllowercaseletters", "Password1234"):
        code, message = await error_of(keys.stub.GenerateKeyPair(generate(keys, passphrase=weak)))
        answers[weak] = (code, weak.lower() in message.lower())
    assert answers == {
        "Short-1": (grpc.StatusCode.INVALID_ARGUMENT, False),
        "alllowercaseletters": (grpc.StatusCode.INVALID_ARGUMENT, False),
        "Password1234": (grpc.StatusCode.INVALID_ARGUMENT, False),
    }


async def test_kdf_without_passphrase_is_invalid(keys: Keys) -> None:
    """passphrase_kdf with no passphrase is INVALID_ARGUMENT."""
    request = generate(keys, passphrase_kdf=keys_pb2.PASSPHRASE_KDF_SCRYPT)
    code, _ = await error_of(keys.stub.GenerateKeyPair(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
