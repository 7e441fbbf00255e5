"""ImportPublicKey, GetPublicKey and ListKeyVersions through the gRPC API, with their audit."""

from __future__ import annotations

import json

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from jwcrypto import jwe, jwk
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from phiseal_dev.testing import person
from tests import weak_keys
from tests.keysvc.conftest import PERSON, Keys, audited, error_of, outbox

SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def _pem(public: object) -> str:
    assert hasattr(public, "public_bytes")
    return str(public.public_bytes(serialization.Encoding.PEM, SPKI).decode())


def import_pem(keys: Keys, pem: str, **fields: object) -> keys_pb2.ImportPublicKeyRequest:
    return keys_pb2.ImportPublicKeyRequest(
        destination_id=keys.destination_id,
        public_key_pem=pem,
        **fields,  # type: ignore[arg-type]
    )


async def test_imported_pem_becomes_the_active_imported_version(keys: Keys) -> None:
    """An RSA 3072 SPKI PEM is stored as version 1, origin IMPORTED, with its own fingerprint."""
    private = rsa.generate_private_key(65537, 3072)
    reply = await keys.stub.ImportPublicKey(
        import_pem(keys, _pem(private.public_key())), metadata=PERSON
    )
    assert (reply.key.version, reply.key.state, reply.key.origin, reply.key.algorithm) == (
        1,
        keys_pb2.KEY_STATE_ACTIVE,
        keys_pb2.KEY_ORIGIN_IMPORTED,
        common_pb2.KEY_ALGORITHM_RSA_3072,
    )
    assert reply.key.public_key_pem == _pem(private.public_key())
    assert await audited(keys.database_url) == [("Destination Public Key Imported", "succeeded")]


async def test_imported_jwk_x25519_with_confirmation(keys: Keys) -> None:
    """An X25519 JWK imported AFTER_CONFIRMATION is pending with a challenge its owner opens."""
    private = x25519.X25519PrivateKey.generate()
    public_jwk = jwk.JWK.from_pyca(private.public_key()).export_public()
    reply = await keys.stub.ImportPublicKey(
        keys_pb2.ImportPublicKeyRequest(
            destination_id=keys.destination_id,
            public_key_jwk=public_jwk,
            activation=keys_pb2.ACTIVATION_AFTER_CONFIRMATION,
        )
    )
    token = jwe.JWE()
    token.deserialize(reply.challenge, key=jwk.JWK.from_pyca(private))
    confirmed = await keys.stub.ConfirmKey(
        keys_pb2.ConfirmKeyRequest(
            destination_id=keys.destination_id,
            version=1,
            challenge_plaintext=token.payload.decode(),
        )
    )
    assert (reply.key.state, confirmed.key.state) == (
        keys_pb2.KEY_STATE_PENDING,
        keys_pb2.KEY_STATE_ACTIVE,
    )


async def test_import_refuses_bad_keys_with_useful_messages(keys: Keys) -> None:
    """Private keys, small RSA, Ed25519, P-256 and garbage are INVALID_ARGUMENT, each saying why."""
    x_private = x25519.X25519PrivateKey.generate()
    private_pem = x_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    private_jwk = jwk.JWK.from_pyca(x_private).export_private()
    cases = {
        "private pem": import_pem(keys, private_pem),
        "private jwk": keys_pb2.ImportPublicKeyRequest(
            destination_id=keys.destination_id, public_key_jwk=private_jwk
        ),
        "rsa 1024": import_pem(
            keys,
            _pem(rsa.generate_private_key(65537, 1024).public_key()),  # noqa: S505 - refused
        ),
        "ed25519": import_pem(keys, _pem(ed25519.Ed25519PrivateKey.generate().public_key())),
        "p-256": import_pem(keys, _pem(ec.generate_private_key(ec.SECP256R1()).public_key())),
        "garbage": import_pem(
            keys, "-----BEGIN PUBLIC KEY-----\nbm9wZQ==\n-----END PUBLIC KEY-----"
        ),
        "not json": keys_pb2.ImportPublicKeyRequest(
            destination_id=keys.destination_id, public_key_jwk="{nope"
        ),
        "nothing": keys_pb2.ImportPublicKeyRequest(destination_id=keys.destination_id),
    }
    answers = {name: await error_of(keys.stub.ImportPublicKey(req)) for name, req in cases.items()}
    assert {name: code for name, (code, _) in answers.items()} == dict.fromkeys(
        cases, grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "PRIVATE key" in answers["private pem"][1]
    assert "PRIVATE key" in answers["private jwk"][1]
    assert "1024 bits" in answers["rsa 1024"][1]
    assert "X25519" in answers["ed25519"][1]
    assert "secp256r1" in answers["p-256"][1]
    assert private_pem.splitlines()[1] not in answers["private pem"][1]


async def test_importing_the_same_key_twice_is_already_exists(keys: Keys) -> None:
    """A public key that is already a version of this destination is ALREADY_EXISTS."""
    pem = _pem(x25519.X25519PrivateKey.generate().public_key())
    await keys.stub.ImportPublicKey(import_pem(keys, pem))
    code, message = await error_of(keys.stub.ImportPublicKey(import_pem(keys, pem)))
    assert (code, "version 1" in message) == (grpc.StatusCode.ALREADY_EXISTS, True)


async def test_get_public_key_active_or_named_version(keys: Keys) -> None:
    """GetPublicKey answers the active version, or the named one; no private material."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    await keys.stub.RegenerateKeyPair(
        keys_pb2.RegenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    active = await keys.stub.GetPublicKey(
        keys_pb2.GetPublicKeyRequest(destination_id=keys.destination_id)
    )
    first = await keys.stub.GetPublicKey(
        keys_pb2.GetPublicKeyRequest(destination_id=keys.destination_id, version=1)
    )
    assert (active.key.version, first.key.version, first.key.state) == (
        2,
        1,
        keys_pb2.KEY_STATE_RETIRED,
    )
    assert "PRIVATE" not in str(active) + str(first)
    assert json.loads(active.key.public_key_jwk)["kid"] == active.key.kid


async def test_get_public_key_without_a_key_is_not_found(keys: Keys) -> None:
    """No key yet (or no such version): NOT_FOUND."""
    none = keys_pb2.GetPublicKeyRequest(destination_id=keys.destination_id)
    missing = keys_pb2.GetPublicKeyRequest(destination_id=keys.destination_id, version=3)
    assert (await error_of(keys.stub.GetPublicKey(none)))[0] == grpc.StatusCode.NOT_FOUND
    assert (await error_of(keys.stub.GetPublicKey(missing)))[0] == grpc.StatusCode.NOT_FOUND


async def test_list_key_versions_newest_first_with_metadata(keys: Keys) -> None:
    """ListKeyVersions: every version newest first, state, origin, created by."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id), metadata=PERSON
    )
    await keys.stub.ImportPublicKey(
        import_pem(keys, _pem(x25519.X25519PrivateKey.generate().public_key())),
        metadata=person("user-2"),
    )
    reply = await keys.stub.ListKeyVersions(
        keys_pb2.ListKeyVersionsRequest(destination_id=keys.destination_id)
    )
    assert [(v.version, v.state, v.origin, v.created_by) for v in reply.versions] == [
        (2, keys_pb2.KEY_STATE_ACTIVE, keys_pb2.KEY_ORIGIN_IMPORTED, "user-2"),
        (1, keys_pb2.KEY_STATE_RETIRED, keys_pb2.KEY_ORIGIN_GENERATED, "user-1"),
    ]


async def test_reads_by_a_person_are_audited_and_by_a_service_not(keys: Keys) -> None:
    """A person's Get/List write Viewed/Listed rows; encryptsvc (mTLS) reads without one."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id)
    )
    get = keys_pb2.GetPublicKeyRequest(destination_id=keys.destination_id)
    listing = keys_pb2.ListKeyVersionsRequest(destination_id=keys.destination_id)
    encryptsvc = keys_pb2_grpc.KeyServiceStub(keys.service.peer_channel("encryptsvc"))
    await encryptsvc.GetPublicKey(get)
    await keys.stub.GetPublicKey(get, metadata=PERSON)
    await keys.stub.ListKeyVersions(listing, metadata=PERSON)
    assert await audited(keys.database_url) == [
        ("Destination Encryption Keys Generated", "succeeded"),
        ("Destination Public Key Viewed", "succeeded"),
        ("Destination Encryption Keys Listed", "succeeded"),
    ]


async def test_audit_rows_name_workspace_actor_destination_and_version(keys: Keys) -> None:
    """An audit row carries workspace, actor, destination and version, and no key material."""
    reply = await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id), metadata=PERSON
    )
    (event,) = await outbox(keys.database_url)
    assert (
        event["workspace_id"],
        event["actor_user_id"],
        event["target"],
        event["details"]["version"],
        event["details"]["kid"],
    ) == (keys.workspace_id, "user-1", keys.destination_id, 1, reply.key.kid)
    body = reply.private_key.private_key_pem.splitlines()[1]
    assert body not in json.dumps(event)


async def test_import_refuses_keys_nobody_can_use(keys: Keys) -> None:
    """Through the API: a small-order X25519 key (every batch would fail INTERNAL) and an even
    RSA modulus are INVALID_ARGUMENT, and no key version is created."""
    cases = {
        "all-zero x25519": weak_keys.x25519_jwk(weak_keys.low_order_x25519()["zero"]),
        "order-8 x25519": weak_keys.x25519_jwk(weak_keys.low_order_x25519()["order 8 (a)"]),
        "even rsa": weak_keys.rsa_jwk(weak_keys.unusable_rsa_moduli()["even"]),
    }
    for name, text in cases.items():
        request = keys_pb2.ImportPublicKeyRequest(
            destination_id=keys.destination_id, public_key_jwk=text
        )
        code, message = await error_of(keys.stub.ImportPublicKey(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "import" in message or "generate" in message, message
    active = keys_pb2.GetPublicKeyRequest(destination_id=keys.destination_id)
    assert (await error_of(keys.stub.GetPublicKey(active)))[0] == grpc.StatusCode.NOT_FOUND
