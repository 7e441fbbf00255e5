"""Key material without a server: every algorithm, passphrase rules, strict public-key import."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519

from services.common.errors import InvalidArgument
from services.keysvc import crypto
from services.keysvc.crypto import Algorithm, Kdf
from tests import weak_keys


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_every_algorithm_round_trips_through_pem_and_jwk(algorithm: Algorithm) -> None:
    """Generated keys of each algorithm re-import from their own PEM and JWK unchanged."""
    pair = crypto.generate(algorithm)
    from_pem = crypto.parse_public_pem(pair.public.pem)
    from_jwk = crypto.parse_public_jwk(pair.public.jwk("d.v1"))
    assert (from_pem, from_jwk) == (pair.public, pair.public)


def test_key_pair_repr_hides_the_private_key() -> None:
    """repr() of a pair or a delivery never contains key material."""
    pair = crypto.generate(Algorithm.X25519)
    delivery = pair.deliver("", Kdf.NONE)
    body = delivery.pem.splitlines()[1]
    assert body not in repr(pair) + repr(delivery)


@pytest.mark.parametrize(
    ("passphrase", "why"),
    [
        ("Sh0rt", "too short"),
        ("onlylowercaseletters", "one kind"),
        ("123456789012345", "one kind"),
        ("correct horse battery staple", "too common"),
        ("Aa1Aa1Aa1Aa1", "too common or repetitive"),
    ],
)
def test_weak_passphrases_say_why(passphrase: str, why: str) -> None:
    """Each weak passphrase is refused with its reason and without being echoed."""
    with pytest.raises(InvalidArgument) as refused:
        crypto.check_passphrase(passphrase)
    assert (why in refused.value.message, passphrase in refused.value.message) == (True, False)


def test_a_good_passphrase_passes() -> None:
    """Mixed classes, long enough, not on the list."""
    crypto.check_passphrase("Tide-Pool 42 otters")


def test_pkcs1_rsa_public_key_is_accepted_and_stored_as_spki() -> None:
    """An "RSA PUBLIC KEY" (PKCS#1) PEM is accepted and re-emitted as SubjectPublicKeyInfo."""
    public = rsa.generate_private_key(65537, 2048).public_key()
    pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    imported = crypto.parse_public_pem(pkcs1.decode())
    assert imported.pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_rsa_exponent_other_than_65537_is_refused() -> None:
    """e = 3 is refused with the reason."""
    n = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    with pytest.raises(InvalidArgument, match="exponent"):
        crypto.parse_public_jwk(
            json.dumps(
                {
                    "kty": "RSA",
                    "n": base64.urlsafe_b64encode(n.to_bytes(256, "big")).decode().rstrip("="),
                    "e": "Aw",
                }
            )
        )


@pytest.mark.parametrize(
    ("jwk", "why"),
    [
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "Ed25519"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "P-256"),
        ({"kty": "oct", "k": "AAAA"}, "symmetric"),
        ({"kty": "OKP", "crv": "X25519", "x": "AAAA"}, "32 bytes"),
        ({"kty": "OKP", "crv": "X25519", "x": "!!"}, "base64url string"),
        ([], "JSON object"),
    ],
)
def test_jwk_import_refusals(jwk: object, why: str) -> None:
    """Unsupported or malformed JWKs are refused with a reason."""
    with pytest.raises(InvalidArgument, match=why):
        crypto.parse_public_jwk(json.dumps(jwk))


def test_jwk_with_signing_use_is_refused() -> None:
    """A JWK marked "use": "sig" is not an encryption key."""
    public = x25519.X25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    member = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(InvalidArgument, match="use"):
        crypto.parse_public_jwk(
            json.dumps({"kty": "OKP", "crv": "X25519", "x": member, "use": "sig"})
        )


def test_certificate_gets_a_hint() -> None:
    """A certificate PEM is refused with the openssl command that extracts its key."""
    with pytest.raises(InvalidArgument, match="x509"):
        crypto.parse_public_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


@pytest.mark.parametrize("name", list(weak_keys.low_order_x25519()))
def test_small_order_x25519_keys_are_refused(name: str) -> None:
    """All-zero, one, the order-8 points, p - 1 and the non-canonical spellings, with and
    without the top bit: each would give an all-zero shared secret, so import refuses it."""
    raw = weak_keys.low_order_x25519()[name]
    with pytest.raises(InvalidArgument, match="small-order"):
        crypto.parse_public_jwk(weak_keys.x25519_jwk(raw))
    pem = (
        x25519.X25519PublicKey.from_public_bytes(raw)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(InvalidArgument, match="small-order"):
        crypto.parse_public_pem(pem)


def test_non_canonical_x25519_encoding_is_refused() -> None:
    """A u-coordinate at or past p (or with the top bit set) is no generator's output."""
    good = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    flipped = bytes([*good[:31], good[31] | 0x80])
    with pytest.raises(InvalidArgument, match="canonical"):
        crypto.parse_public_jwk(weak_keys.x25519_jwk(flipped))


@pytest.mark.parametrize("name", ["even", "prime", "square", "small factor"])
def test_rsa_moduli_nobody_can_use_are_refused(name: str) -> None:
    """A 2048-bit modulus that is even, prime, a square or has a small factor: refused."""
    n = weak_keys.unusable_rsa_moduli()[name]
    with pytest.raises(InvalidArgument, match="modulus"):
        crypto.parse_public_jwk(weak_keys.rsa_jwk(n))
