"""The JWE parameters PHIseal writes: one definition for the encrypting service and this kit."""

from __future__ import annotations

import base64
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

ALG_RSA = "RSA-OAEP-256"
ALG_ECDH = "ECDH-ES+A256KW"
ENC = "A256GCM"
# The private header parameter that carries the binding claims (RFC 7516 §4.3 allows private
# names; it is not listed in "crit", so every JOSE library still decrypts).
BINDING_CLAIM = "phiseal"
# RSA-OAEP-256 for JWE key wrapping, and the whole of the SEGMENT_RSA_OAEP format.
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def ecdh_es_kek(shared_secret: bytes) -> bytes:
    """The ECDH-ES+A256KW key-wrapping key: RFC 7518 §4.6.2 Concat KDF (SHA-256), empty
    PartyUInfo and PartyVInfo."""
    alg = ALG_ECDH.encode("ascii")
    other_info = struct.pack(">I", len(alg)) + alg + struct.pack(">III", 0, 0, 256)
    return ConcatKDFHash(hashes.SHA256(), 32, other_info).derive(shared_secret)


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
