"""Test key pairs: generated once per session (RSA generation is slow)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519

from phiseal_decrypt import xwing
from services.encryptsvc.envelope import RecipientKey

PrivateKey = rsa.RSAPrivateKey | x25519.X25519PrivateKey | xwing.XWingPrivateKey


@dataclass(frozen=True)
class KeyPair:
    kid: str
    private: PrivateKey

    @property
    def private_pem(self) -> bytes:
        if isinstance(self.private, xwing.XWingPrivateKey):
            return self.private.pem.encode("ascii")
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_pem(self) -> str:
        if isinstance(self.private, xwing.XWingPrivateKey):
            return self.private.public.pem
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    @property
    def recipient(self) -> RecipientKey:
        return RecipientKey.from_pem(self.kid, self.public_pem)


@functools.cache
def rsa_key(kid: str = "dest_1.v1", bits: int = 2048) -> KeyPair:
    return KeyPair(kid, rsa.generate_private_key(public_exponent=65537, key_size=bits))


@functools.cache
def x25519_key(kid: str = "dest_1.v1") -> KeyPair:
    return KeyPair(kid, x25519.X25519PrivateKey.generate())


@functools.cache
def hybrid_key(kid: str = "dest_1.v1") -> KeyPair:
    """ML-KEM-768 + X25519 (X-Wing)."""
    return KeyPair(kid, xwing.XWingPrivateKey.generate())
