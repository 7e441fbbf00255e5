"""ML-KEM-768 + X25519 (X-Wing) keys through the gRPC API: forms, delivery, rotation, import."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import grpc
import pytest
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2

from phiseal_decrypt import Decryptor, Keyring, xwing
from phiseal_decrypt.jose import b64url
from services.common.errors import InvalidArgument
from services.keysvc import crypto
from services.keysvc.crypto import Algorithm
from tests.keysvc.conftest import PASSPHRASE, PERSON, Keys, error_of

HYBRID = common_pb2.KEY_ALGORITHM_MLKEM768_X25519
LATER = keys_pb2.ACTIVATION_AFTER_CONFIRMATION


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _ring(pem: str, passphrase: str | None = None) -> Keyring:
    ring = Keyring()
    secret = passphrase.encode() if passphrase is not None else None
    ring.add_pem(pem.encode(), passphrase=secret, source="delivered")
    return ring


async def test_generated_hybrid_key_has_the_drafts_forms(keys: Keys) -> None:
    """PEM is an id-XWing SPKI of the 1216-byte key, the JWK is kty AKP / alg HPKE-9-KE with the
    same bytes in "pub", the fingerprint hashes the SPKI, and the delivered PKCS#8 seed opens to
    exactly this public key."""
    reply = await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id, algorithm=HYBRID),
        metadata=PERSON,
    )
    key = reply.key
    spki = xwing.pem_body(key.public_key_pem, "PUBLIC KEY")
    assert spki is not None
    public = xwing.XWingPublicKey.from_spki_der(spki)
    jwk = json.loads(key.public_key_jwk)
    assert key.algorithm == HYBRID
    assert {k: jwk[k] for k in ("kty", "alg", "use", "kid")} == {
        "kty": "AKP",
        "alg": "HPKE-9-KE",
        "use": "enc",
        "kid": key.kid,
    }
    assert _b64url(jwk["pub"]) == public.raw
    assert hashlib.sha256(spki).hexdigest() == key.fingerprint_sha256
    private = _ring(reply.private_key.private_key_pem).entries[0].key
    assert isinstance(private, xwing.XWingPrivateKey)
    assert private.public == public


@pytest.mark.parametrize(
    "kdf", [keys_pb2.PASSPHRASE_KDF_SCRYPT, keys_pb2.PASSPHRASE_KDF_PBKDF2_SHA256]
)
async def test_passphrase_protected_hybrid_key_opens_in_the_kit(keys: Keys, kdf: int) -> None:
    """A passphrase-protected X-Wing delivery is PBES2 PKCS#8 that the kit opens with the
    passphrase (and refuses without it)."""
    reply = await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(
            destination_id=keys.destination_id,
            algorithm=HYBRID,
            passphrase=PASSPHRASE,
            passphrase_kdf=kdf,  # type: ignore[arg-type]
        ),
        metadata=PERSON,
    )
    pem = reply.private_key.private_key_pem
    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    private = _ring(pem, PASSPHRASE).entries[0].key
    assert isinstance(private, xwing.XWingPrivateKey)
    assert private.public.pem == reply.key.public_key_pem


async def test_hybrid_rotation_is_confirmed_with_the_kits_challenge_answer(keys: Keys) -> None:
    """Regenerating to a hybrid key AFTER_CONFIRMATION gives an HPKE-9-KE challenge; the kit opens
    it with the new private key and ConfirmKey activates the version. A later regenerate without
    an algorithm stays hybrid."""
    await keys.stub.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=keys.destination_id), metadata=PERSON
    )
    reply = await keys.stub.RegenerateKeyPair(
        keys_pb2.RegenerateKeyPairRequest(
            destination_id=keys.destination_id, algorithm=HYBRID, activation=LATER
        ),
        metadata=PERSON,
    )
    header = json.loads(_b64url(reply.challenge.split(".")[0]))
    assert (header["alg"], header["enc"], len(_b64url(header["ek"]))) == (
        "HPKE-9-KE",
        "A256GCM",
        1120,
    )
    answer = Decryptor(_ring(reply.private_key.private_key_pem)).decrypt_challenge(reply.challenge)
    confirmed = await keys.stub.ConfirmKey(
        keys_pb2.ConfirmKeyRequest(
            destination_id=keys.destination_id, version=2, challenge_plaintext=answer
        ),
        metadata=PERSON,
    )
    again = await keys.stub.RegenerateKeyPair(
        keys_pb2.RegenerateKeyPairRequest(destination_id=keys.destination_id), metadata=PERSON
    )
    assert (confirmed.key.state, again.key.algorithm) == (keys_pb2.KEY_STATE_ACTIVE, HYBRID)


@pytest.mark.parametrize("form", ["pem", "jwk"])
async def test_hybrid_public_key_imports_from_pem_or_jwk(keys: Keys, form: str) -> None:
    """A customer's own X-Wing public key imports from its SPKI PEM or its AKP JWK and is served
    back in both forms unchanged."""
    public = xwing.XWingPrivateKey.generate().public
    if form == "pem":
        request = keys_pb2.ImportPublicKeyRequest(
            destination_id=keys.destination_id, public_key_pem=public.pem
        )
    else:
        jwk = json.dumps({"kty": "AKP", "alg": "HPKE-9-KE", "pub": b64url(public.raw)})
        request = keys_pb2.ImportPublicKeyRequest(
            destination_id=keys.destination_id, public_key_jwk=jwk
        )
    reply = await keys.stub.ImportPublicKey(request, metadata=PERSON)
    assert (reply.key.algorithm, reply.key.public_key_pem) == (HYBRID, public.pem)
    assert reply.key.fingerprint_sha256 == public.fingerprint


def _akp(**members: str) -> str:
    return json.dumps({"kty": "AKP", **members})


@pytest.mark.parametrize(
    ("jwk", "hint"),
    [
        (_akp(alg="HPKE-9", pub=b64url(bytes(1216))), "HPKE-9-KE"),
        (_akp(alg="HPKE-9-KE", pub=b64url(bytes(1184))), "1216 bytes"),
        (_akp(alg="HPKE-9-KE", pub="AA", priv="AA"), "PRIVATE key"),
    ],
)
async def test_bad_hybrid_jwks_are_refused_with_the_fix(keys: Keys, jwk: str, hint: str) -> None:
    """The integrated-encryption alg, a wrong length and a private JWK are INVALID_ARGUMENT."""
    code, message = await error_of(
        keys.stub.ImportPublicKey(
            keys_pb2.ImportPublicKeyRequest(destination_id=keys.destination_id, public_key_jwk=jwk),
            metadata=PERSON,
        )
    )
    assert (code, hint in message) == (grpc.StatusCode.INVALID_ARGUMENT, True)


def test_small_order_x25519_half_is_refused() -> None:
    """An X-Wing key whose X25519 half is a small-order point could never be encapsulated to:
    import refuses it rather than failing every batch later."""
    good = xwing.XWingPrivateKey.generate().public.raw
    forged = xwing.XWingPublicKey.SPKI_PREFIX + good[:1184] + bytes(32)  # u = 0: order 1
    with pytest.raises(InvalidArgument) as refused:
        crypto.parse_public_pem(_pem_of(forged))
    assert "small-order" in refused.value.message


def _pem_of(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n"


def test_draft_x509_example_key_round_trips() -> None:
    """The X-Wing draft's X.509 example (seed 00..1f) gives its published PEMs byte for byte,
    and keysvc reads the published public key as a hybrid key."""
    data = Path(__file__).parents[1] / "data" / "hpke"
    private = xwing.XWingPrivateKey(bytes(range(32)))
    published = (data / "xwing-draft-x509.priv.pem").read_text()
    public_pem = (data / "xwing-draft-x509.pub.pem").read_text()
    imported = crypto.parse_public_pem(public_pem)
    assert (private.pem, private.public.pem) == (published, public_pem)
    assert (imported.algorithm, imported.pem) == (Algorithm.MLKEM768_X25519, public_pem)
