"""PKCS#8 private-key encryption under a passphrase: scrypt or PBKDF2-SHA256, both strong.

``cryptography`` writes encrypted PKCS#8 only with its own (2,048-round PBKDF2) defaults, so
PBES2 (RFC 8018) with scrypt (RFC 7914 section 7, as ``openssl pkcs8 -topk8 -scrypt``) or with
600,000-round PBKDF2-SHA256 is assembled here from a minimal DER encoder.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# OWASP's PBKDF2-HMAC-SHA256 floor (2023): cryptography's default writes only 2,048 rounds.
PBKDF2_ITERATIONS = 600_000
# OWASP lists N=2^14, r=8, p=5 as equal in strength to N=2^17, r=8, p=1; unlike the latter it
# stays inside OpenSSL 3's default 32 MiB scrypt memory limit, so `openssl pkey` can open it.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 5

_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_HMAC_SHA256 = "1.2.840.113549.2.9"
_NULL = b"\x05\x00"


@dataclass(frozen=True)
class EncryptedKey:
    """A PEM "ENCRYPTED PRIVATE KEY" and the KDF cost it was written with."""

    pem: bytes
    kdf: str  # "scrypt" or "pbkdf2-sha256"
    cost: int  # scrypt N or PBKDF2 iterations


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _length(len(body)) + body


def _sequence(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # leading 0 keeps it positive
    return _tlv(0x02, body)


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def pem(label: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def _pbes2(plain: bytes, kdf: bytes, kek: bytes) -> bytes:
    """EncryptedPrivateKeyInfo: PBES2(``kdf``, AES-256-CBC) over the PKCS#8 DER ``plain``."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    scheme = _sequence(_oid(_OID_AES256_CBC), _octets(iv))
    algorithm = _sequence(_oid(_OID_PBES2), _sequence(kdf, scheme))
    return pem("ENCRYPTED PRIVATE KEY", _sequence(algorithm, _octets(encrypted)))


def encrypt_scrypt(pkcs8_der: bytes, passphrase: str) -> EncryptedKey:
    """PBES2 with scrypt (N=2^14, r=8, p=5) and AES-256-CBC over a PKCS#8 DER private key."""
    salt = os.urandom(16)
    kek = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(
        passphrase.encode()
    )
    params = _sequence(
        _octets(salt), _integer(SCRYPT_N), _integer(SCRYPT_R), _integer(SCRYPT_P), _integer(32)
    )
    kdf = _sequence(_oid(_OID_SCRYPT), params)
    return EncryptedKey(_pbes2(pkcs8_der, kdf, kek), "scrypt", SCRYPT_N)


def encrypt_pbkdf2(pkcs8_der: bytes, passphrase: str) -> EncryptedKey:
    """PBES2 with PBKDF2-HMAC-SHA256 (600,000 rounds) and AES-256-CBC over a PKCS#8 DER key."""
    salt = os.urandom(16)
    kek = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=salt, iterations=PBKDF2_ITERATIONS
    ).derive(passphrase.encode())
    prf = _sequence(_oid(_OID_HMAC_SHA256), _NULL)
    params = _sequence(_octets(salt), _integer(PBKDF2_ITERATIONS), _integer(32), prf)
    kdf = _sequence(_oid(_OID_PBKDF2), params)
    return EncryptedKey(_pbes2(pkcs8_der, kdf, kek), "pbkdf2-sha256", PBKDF2_ITERATIONS)
