"""Hybrid ML-KEM-768 + X25519 (X-Wing) keys in their draft encodings, and HPKE-9-KE key wrapping.

The KEM is X-Wing (draft-connolly-cfrg-xwing-kem-10), which draft-ietf-hpke-pq names
MLKEM768-X25519 (HPKE KEM id 0x647a); ``cryptography``'s ``hpke.KEM.MLKEM768_X25519`` implements
it, and every KEM, KDF and AEAD operation here is ``cryptography``'s own. What this module adds is
only encoding:

- the private key is X-Wing's 32-byte seed; SHAKE256(seed, 96 bytes) gives the ML-KEM-768 seed
  (d || z, 64 bytes) and the X25519 private key (32 bytes), as the draft's key expansion says;
- the public key is ML-KEM-768's 1184 bytes followed by X25519's 32 (1216 bytes);
- PEM: SubjectPublicKeyInfo / PKCS#8 with id-XWing (1.3.6.1.4.1.62253.25722), the raw key as
  the BIT STRING / the seed as the privateKey OCTET STRING (the draft's "Use in X.509");
- JWK: kty "AKP" with "pub" (and "priv") as draft-ietf-jose-hpke-pq-pqt-00 defines;
- key encryption: HPKE-9-KE (draft-ietf-jose-hpke-pq-pqt-00 over draft-ietf-jose-hpke-encrypt-20):
  HPKE base mode, KEM MLKEM768-X25519, KDF SHAKE256 (0x0011), AEAD AES-256-GCM, info = the
  Recipient_structure, empty aad; the encapsulated secret travels in the "ek" header parameter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from typing import ClassVar

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from phiseal_decrypt.jose import ENC, b64url

ALG_HPKE = "HPKE-9-KE"
JWK_KTY = "AKP"
SEED_BYTES = 32
PUBLIC_BYTES = 1216
ENC_BYTES = 1120  # the encapsulated secret ("ek"): 1088 ML-KEM ciphertext + 32 X25519
_MLKEM_PUBLIC = 1184
OID = "1.3.6.1.4.1.62253.25722"
# Both encodings have a fixed length, so their DER is a constant prefix and the raw key.
_SPKI_PREFIX = bytes.fromhex("308204d4300d060b2b0601040183e62d81c87a038204c100")
_PKCS8_PREFIX = bytes.fromhex("3034020100300d060b2b0601040183e62d81c87a0420")
SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.SHAKE256, hpke.AEAD.AES_256_GCM)


class XWingError(ValueError):
    """Bytes that are not an X-Wing key, or an HPKE-9-KE value that does not open."""


def recipient_info(enc: str) -> bytes:
    """The HPKE info of key encryption: the draft's Recipient_structure, no extra info."""
    return b"JOSE-HPKE rcpt\xff" + enc.encode("ascii") + b"\xff"


def _pem(label: str, der: bytes) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


def pem_body(text: str, label: str) -> bytes | None:
    """The DER inside a PEM block with ``label``, or None when there is none."""
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start = text.find(begin)
    stop = text.find(end, start + len(begin))
    if start < 0 or stop < 0:
        return None
    try:
        return base64.b64decode("".join(text[start + len(begin) : stop].split()), validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class XWingPublicKey:
    """An X-Wing encapsulation key (1216 bytes), checked by loading both halves."""

    raw: bytes
    SPKI_PREFIX: ClassVar[bytes] = _SPKI_PREFIX

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_BYTES:
            raise XWingError(f"an X-Wing public key is {PUBLIC_BYTES} bytes, not {len(self.raw)}")
        self.hpke_key  # noqa: B018  (validates: a bad ML-KEM or X25519 half raises here)

    @property
    def hpke_key(self) -> hpke.MLKEM768X25519PublicKey:
        try:
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(self.raw[:_MLKEM_PUBLIC]),
                x25519.X25519PublicKey.from_public_bytes(self.raw[_MLKEM_PUBLIC:]),
            )
        except ValueError:
            raise XWingError("not a valid X-Wing public key (ML-KEM-768 or X25519 half)") from None

    @property
    def x25519_raw(self) -> bytes:
        return self.raw[_MLKEM_PUBLIC:]

    @property
    def spki_der(self) -> bytes:
        return _SPKI_PREFIX + self.raw

    @property
    def pem(self) -> str:
        return _pem("PUBLIC KEY", self.spki_der)

    @property
    def fingerprint(self) -> str:
        """Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo, as for every key type."""
        return hashlib.sha256(self.spki_der).hexdigest()

    def jwk_members(self) -> dict[str, str]:
        return {"kty": JWK_KTY, "alg": ALG_HPKE, "pub": b64url(self.raw)}

    @classmethod
    def from_spki_der(cls, der: bytes) -> XWingPublicKey:
        if len(der) != len(_SPKI_PREFIX) + PUBLIC_BYTES or not der.startswith(_SPKI_PREFIX):
            raise XWingError("not an X-Wing SubjectPublicKeyInfo (id-XWing, 1216-byte key)")
        return cls(der[len(_SPKI_PREFIX) :])


class XWingPrivateKey:
    """An X-Wing decapsulation key: the 32-byte seed and the two keys expanded from it."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise XWingError(f"an X-Wing private key is a {SEED_BYTES}-byte seed")
        shake = hashes.Hash(hashes.SHAKE256(96))
        shake.update(seed)
        expanded = shake.finalize()
        mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        x_key = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        self._seed = seed
        self.hpke_key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x_key)
        self.public = XWingPublicKey(
            mlkem_key.public_key().public_bytes_raw() + x_key.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> XWingPrivateKey:
        return cls(os.urandom(SEED_BYTES))

    def __repr__(self) -> str:  # never let a debugger or log line print the seed
        return f"XWingPrivateKey(fingerprint={self.public.fingerprint})"

    @property
    def pkcs8_der(self) -> bytes:
        return _PKCS8_PREFIX + self._seed

    @property
    def pem(self) -> str:
        return _pem("PRIVATE KEY", self.pkcs8_der)

    @classmethod
    def from_pkcs8_der(cls, der: bytes) -> XWingPrivateKey:
        if len(der) != len(_PKCS8_PREFIX) + SEED_BYTES or not der.startswith(_PKCS8_PREFIX):
            raise XWingError("not an X-Wing PKCS#8 private key (id-XWing, 32-byte seed)")
        return cls(der[len(_PKCS8_PREFIX) :])


def is_xwing_pkcs8(der: bytes) -> bool:
    return der.startswith(_PKCS8_PREFIX)


def wrap(public: XWingPublicKey, cek: bytes, enc: str) -> tuple[bytes, bytes]:
    """HPKE-9-KE: (encapsulated secret for "ek", the JWE Encrypted Key) for ``cek``."""
    sealed = SUITE.encrypt(cek, public.hpke_key, info=recipient_info(enc))
    return sealed[:ENC_BYTES], sealed[ENC_BYTES:]


def unwrap(private: XWingPrivateKey, ek: bytes, encrypted_key: bytes, enc: str) -> bytes | None:
    """The CEK, or None when this key does not open it (a wrong key fails authentication)."""
    if len(ek) != ENC_BYTES:
        return None
    try:
        return SUITE.decrypt(ek + encrypted_key, private.hpke_key, info=recipient_info(enc))
    except (InvalidTag, ValueError):
        return None


def seal_compact(public: XWingPublicKey, header: dict[str, object], plaintext: bytes) -> str:
    """One compact JWE (HPKE-9-KE, A256GCM) with ``header``'s members protected too."""
    cek = os.urandom(32)
    ek, encrypted_key = wrap(public, cek, ENC)
    protected = b64url(orjson.dumps({"alg": ALG_HPKE, "enc": ENC, **header, "ek": b64url(ek)}))
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    body, tag = sealed[:-16], sealed[-16:]
    return ".".join((protected, b64url(encrypted_key), b64url(iv), b64url(body), b64url(tag)))


def jwk_text(public: XWingPublicKey, kid: str) -> str:
    """The public JWK as JSON text: kty AKP, alg HPKE-9-KE, pub, use "enc", kid."""
    return json.dumps(public.jwk_members() | {"use": "enc", "kid": kid}, separators=(",", ":"))
