"""Opens a passphrase-protected PKCS#8 key (PBES2: scrypt or PBKDF2-SHA256, AES-256-CBC).

``cryptography`` decrypts "ENCRYPTED PRIVATE KEY" only together with parsing the key inside, and
it does not know X-Wing's OID; OpenSSL 3.0 neither. So for an X-Wing key the kit removes the
passphrase layer itself, for exactly the two schemes keysvc writes (RFC 8018 PBES2 with RFC 7914
scrypt or PBKDF2-HMAC-SHA256, and AES-256-CBC), with ``cryptography``'s KDFs and cipher.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

_PBES2 = "1.2.840.113549.1.5.13"
_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_PBKDF2 = "1.2.840.113549.1.5.12"
_HMAC_SHA256 = "1.2.840.113549.2.9"
_AES256_CBC = "2.16.840.1.101.3.4.1.42"
# Refuse parameters that would make opening a hostile file cost minutes or gigabytes.
_MAX_SCRYPT_N = 2**20
_MAX_PBKDF2_ROUNDS = 10_000_000


class Pbes2Error(ValueError):
    """Not a PBES2 key this kit opens, or the passphrase is wrong."""


def _read(data: bytes, at: int) -> tuple[int, bytes, int]:
    """(tag, contents, next offset) of the DER element at ``at``."""
    if at + 2 > len(data):
        raise Pbes2Error("truncated DER")
    tag, length, at = data[at], data[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise Pbes2Error("bad DER length")
        length, at = int.from_bytes(data[at : at + count], "big"), at + count
    if at + length > len(data):
        raise Pbes2Error("truncated DER")
    return tag, data[at : at + length], at + length


def _items(data: bytes) -> list[tuple[int, bytes]]:
    items, at = [], 0
    while at < len(data):
        tag, body, at = _read(data, at)
        items.append((tag, body))
    return items


def _oid(body: bytes) -> str:
    arcs, value = [body[0] // 40, body[0] % 40], 0
    for byte in body[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def _expect(item: tuple[int, bytes], tag: int) -> bytes:
    if item[0] != tag:
        raise Pbes2Error("unexpected DER structure")
    return item[1]


def decrypt(der: bytes, passphrase: bytes) -> bytes:
    """The PKCS#8 DER inside an EncryptedPrivateKeyInfo ``der``."""
    try:
        return _decrypt(der, passphrase)
    except (IndexError, ValueError) as exc:
        if isinstance(exc, Pbes2Error):
            raise
        raise Pbes2Error("not a PBES2 encrypted private key this kit reads") from None


def _decrypt(der: bytes, passphrase: bytes) -> bytes:
    algorithm, encrypted = _items(_expect(_items(der)[0], 0x30))
    oid, params = _items(_expect(algorithm, 0x30))
    if _oid(_expect(oid, 0x06)) != _PBES2:
        raise Pbes2Error("the key is not protected with PBES2")
    kdf, scheme = _items(_expect(params, 0x30))
    kdf_oid, kdf_params = _items(_expect(kdf, 0x30))
    scheme_oid, iv = _items(_expect(scheme, 0x30))
    if _oid(_expect(scheme_oid, 0x06)) != _AES256_CBC:
        raise Pbes2Error("only AES-256-CBC protected keys are supported")
    fields = _items(_expect(kdf_params, 0x30))
    salt = _expect(fields[0], 0x04)
    name = _oid(_expect(kdf_oid, 0x06))
    if name == _SCRYPT:
        n, r, p = (int.from_bytes(_expect(f, 0x02), "big") for f in fields[1:4])
        if n > _MAX_SCRYPT_N or r > 32 or p > 16:
            raise Pbes2Error("scrypt parameters are beyond what this kit accepts")
        kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)
    elif name == _PBKDF2:
        rounds = int.from_bytes(_expect(fields[1], 0x02), "big")
        prf = [f for f in fields[2:] if f[0] == 0x30]
        if rounds > _MAX_PBKDF2_ROUNDS or not prf or _oid(_items(prf[0][1])[0][1]) != _HMAC_SHA256:
            raise Pbes2Error("only PBKDF2-HMAC-SHA256 with a sane round count is supported")
        kek = PBKDF2HMAC(hashes.SHA256(), 32, salt, rounds).derive(passphrase)
    else:
        raise Pbes2Error("only scrypt and PBKDF2 protected keys are supported")
    decryptor = Cipher(algorithms.AES(kek), modes.CBC(_expect(iv, 0x04))).decryptor()
    padded = decryptor.update(_expect(encrypted, 0x04)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise Pbes2Error("wrong passphrase") from None
