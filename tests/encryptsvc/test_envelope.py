"""The envelope: independent JOSE libraries open our JWE; tampering and moving are detected."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc import jwe as joserfc_jwe
from joserfc.jwk import OKPKey, RSAKey
from jwcrypto import jwe, jwk

from phiseal_decrypt import BindingMismatch, DecryptError, Decryptor, Keyring
from phiseal_decrypt.jose import BINDING_CLAIM
from services.common.errors import FailedPrecondition
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc.envelope import (
    JweSealer,
    ValueTooLong,
    new_sealer,
)
from tests.encryptsvc.keys import KeyPair, hybrid_key, rsa_key, x25519_key

VALUES: list[Any] = [
    "jane.doe@example.com",
    "",
    "Ana García — ünïcödé ✓",
    42,
    -7,
    25.5,
    True,
    False,
    None,
    [],
    ["penicillin", "latex"],
    {},
    {"code": "E11.9", "nested": {"list": [1, {"x": None}]}},
    "x" * 5000,
]
KEYS = {"rsa": rsa_key, "x25519": x25519_key}


def _key(name: str) -> KeyPair:
    return KEYS[name]()


def _jwcrypto_open(key: KeyPair, token: str) -> tuple[Any, dict[str, Any]]:
    obj = jwe.JWE()
    obj.deserialize(token, key=jwk.JWK.from_pem(key.private_pem))
    return orjson.loads(obj.payload), obj.jose_header


def _seal(key: KeyPair, value: Any, mid: str = "msg-1", path: str = "traits.email") -> str:
    return new_sealer(EncryptionFormat.JWE, key.recipient, "dest_1").seal(
        orjson.dumps(value), mid, path
    )


@pytest.mark.parametrize("kind", sorted(KEYS))
@pytest.mark.parametrize("value", VALUES, ids=[f"v{i}" for i in range(len(VALUES))])
def test_jwcrypto_decrypts_every_json_type(kind: str, value: Any) -> None:
    """jwcrypto, given only the private key, returns the exact original value and type."""
    key = _key(kind)
    opened, _ = _jwcrypto_open(key, _seal(key, value))
    assert value == opened
    assert type(value) is type(opened)


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_joserfc_decrypts(kind: str) -> None:
    """joserfc (a second independent library) decrypts too, with the private header allowed."""
    key = _key(kind)
    value = {"a": [1, 2.5, None, True]}
    imported = (RSAKey if kind == "rsa" else OKPKey).import_key(key.private_pem)
    registry = joserfc_jwe.JWERegistry(
        algorithms=["RSA-OAEP-256", "ECDH-ES+A256KW", "A256GCM"], strict_check_header=False
    )
    result = joserfc_jwe.decrypt_compact(_seal(key, value), imported, registry=registry)
    assert result.plaintext is not None
    assert orjson.loads(result.plaintext) == value


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_header_names_key_and_binding(kind: str) -> None:
    """The protected header carries alg, enc, kid and the destination/event/path binding."""
    key = _key(kind)
    _, header = _jwcrypto_open(key, _seal(key, 1, "msg-9", "properties.items[2].sku"))
    expected_alg = "RSA-OAEP-256" if kind == "rsa" else "ECDH-ES+A256KW"
    assert (expected_alg, "A256GCM", "dest_1.v1") == (header["alg"], header["enc"], header["kid"])
    assert header["phiseal"] == {"dst": "dest_1", "mid": "msg-9", "path": "properties.items[2].sku"}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_batch_shares_one_wrapped_key_with_fresh_ivs(kind: str) -> None:
    """All fields of a batch share encrypted_key (and epk); every IV is different."""
    key = _key(kind)
    sealer = new_sealer(EncryptionFormat.JWE, key.recipient, "dest_1")
    tokens = [sealer.seal(b"1", f"m{i}", "traits.a").split(".") for i in range(50)]
    assert len({t[1] for t in tokens}) == 1
    assert len({t[2] for t in tokens}) == 50


def test_cek_rolls_past_its_use_cap() -> None:
    """A content key is retired after max_uses fields and a new one is wrapped."""
    key = rsa_key()
    sealer = JweSealer(key.recipient, "dest_1", max_uses=3)
    tokens = [sealer.seal(b"1", "m", "traits.a") for _ in range(7)]
    assert len({t.split(".")[1] for t in tokens}) == 3
    assert sealer.ceks_issued == 3
    assert all(_jwcrypto_open(key, t)[0] == 1 for t in tokens)


def _flip(token: str, part: int, offset: int) -> str:
    parts = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[offset % len(raw)] ^= 0x01
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(parts)


@pytest.mark.parametrize("kind", sorted(KEYS))
@pytest.mark.parametrize(
    ("part", "offset"), [(0, 5), (0, -3), (1, 0), (2, 0), (3, 0), (3, -1), (4, 7)]
)
def test_one_changed_byte_fails(kind: str, part: int, offset: int) -> None:
    """Changing one byte of any part (header, wrapped key, IV, ciphertext, tag) fails jwcrypto."""
    key = _key(kind)
    token = _flip(_seal(key, {"v": "secret"}), part, offset)
    with pytest.raises(Exception):  # noqa: B017, PT011 - jwcrypto raises several types here
        _jwcrypto_open(key, token)


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_swapped_header_fails(kind: str) -> None:
    """A ciphertext given another field's header (rebinding it) fails authentication."""
    key = _key(kind)
    sealer = new_sealer(EncryptionFormat.JWE, key.recipient, "dest_1")
    a = sealer.seal(b'"a"', "msg-1", "traits.email").split(".")
    b = sealer.seal(b'"b"', "msg-2", "traits.phone").split(".")
    forged = ".".join([b[0], *a[1:]])
    with pytest.raises(Exception):  # noqa: B017, PT011
        _jwcrypto_open(key, forged)
    with pytest.raises(DecryptError):
        Decryptor(Keyring.from_files([])).decrypt_value(forged)


def test_moved_ciphertext_is_refused_by_the_kit() -> None:
    """A valid ciphertext moved to another path or event fails the kit's binding check."""
    key = rsa_key()
    ring = Keyring()
    ring.add(key.private)
    token = _seal(key, "jane@example.com", "msg-1", "traits.email")
    decryptor = Decryptor(ring)
    assert (
        decryptor.decrypt_value(token, message_id="msg-1", path="traits.email")
        == "jane@example.com"
    )
    with pytest.raises(BindingMismatch):
        decryptor.decrypt_value(token, message_id="msg-1", path="traits.phone")
    with pytest.raises(BindingMismatch):
        decryptor.decrypt_value(token, message_id="msg-2", path="traits.email")


def test_segment_format_is_raw_rsa_oaep_sha256() -> None:
    """SEGMENT_RSA_OAEP is base64(RSA-OAEP-SHA256(JSON value)), opened with plain cryptography."""
    key = rsa_key()
    text = new_sealer(EncryptionFormat.SEGMENT_RSA_OAEP, key.recipient, "dest_1").seal(
        b'"02100"', "", ""
    )
    assert isinstance(key.private, rsa.RSAPrivateKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert key.private.decrypt(base64.b64decode(text), oaep) == b'"02100"'


def test_segment_value_too_long_is_refused() -> None:
    """A value longer than one RSA-2048 OAEP block (190 bytes) raises, never passes through."""
    sealer = new_sealer(EncryptionFormat.SEGMENT_RSA_OAEP, rsa_key().recipient, "dest_1")
    sealer.seal(b"x" * 190, "", "")
    with pytest.raises(ValueTooLong):
        sealer.seal(b"x" * 191, "", "")


def test_segment_with_x25519_key_fails_the_batch() -> None:
    """SEGMENT_RSA_OAEP with an X25519 key is FAILED_PRECONDITION with a clear message."""
    with pytest.raises(FailedPrecondition, match="X25519"):
        new_sealer(EncryptionFormat.SEGMENT_RSA_OAEP, x25519_key().recipient, "dest_1")


@pytest.mark.parametrize("kind", ["rsa", "x25519", "hybrid"])
def test_constant_parts_encoded_once_give_the_same_tokens(kind: str) -> None:
    """The header's fixed part encoded once per content key, the rest per field, IVs drawn in
    bulk: for messageIds and paths of every length modulo 3 (with characters JSON escapes),
    across IV refills and key rolls, each token's header is exactly the JSON of its header,
    every IV is distinct, and the kit opens each to its value."""
    key = {"rsa": rsa_key, "x25519": x25519_key, "hybrid": hybrid_key}[kind]()
    sealer = new_sealer(EncryptionFormat.JWE, key.recipient, "dest_1", max_uses=97)
    cases = [
        (f"m{'x' * (i % 5)}", f'traits.{"é" * (i % 4)}a["q\\"{i % 3}"]', i) for i in range(300)
    ]
    tokens = [sealer.seal(orjson.dumps(v), mid, path) for mid, path, v in cases]
    ivs = {t.split(".")[2] for t in tokens}
    headers = [orjson.loads(base64.urlsafe_b64decode(t.split(".")[0] + "==")) for t in tokens]
    assert (len(ivs), getattr(sealer, "ceks_issued", None)) == (300, 4)
    assert [(h[BINDING_CLAIM]["mid"], h[BINDING_CLAIM]["path"]) for h in headers] == [
        (mid, path) for mid, path, _ in cases
    ]
    ring = Keyring()
    ring.add(key.private)
    decryptor = Decryptor(ring)
    opened = [
        decryptor.decrypt_value(t, message_id=mid, path=path)
        for t, (mid, path, _) in list(zip(tokens, cases, strict=True))[::37]
    ]
    assert opened == [v for _, _, v in cases[::37]]


@pytest.mark.parametrize("kind", ["rsa", "x25519", "hybrid", "segment"])
@pytest.mark.parametrize("value", VALUES[:4] + VALUES[-3:], ids=[f"v{i}" for i in range(7)])
def test_predicted_length_is_the_sealed_length(kind: str, value: Any) -> None:
    """The per-event output budget predicts every field's length before sealing it; the
    prediction equals the length of what is sealed, for every key type (hybrid keys carry the
    ~1.5 KB "ek" in the header instead of an epk)."""
    key = {"rsa": rsa_key, "x25519": x25519_key, "hybrid": hybrid_key, "segment": rsa_key}[kind]()
    fmt = EncryptionFormat.SEGMENT_RSA_OAEP if kind == "segment" else EncryptionFormat.JWE
    sealer = new_sealer(fmt, key.recipient, "dest_1")
    plaintext = orjson.dumps(value)[:100] if kind == "segment" else orjson.dumps(value)
    for mid, path in [("msg-1", "traits.email"), ('ünï "q"', 'traits["a b"][3]')]:
        expected = sealer.sealed_length(len(plaintext), mid, path)
        assert expected == len(sealer.seal(plaintext, mid, path))
