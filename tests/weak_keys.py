"""Public keys nobody can use: small-order X25519 points and RSA moduli with unusable
parameters, as JWK text (what a hostile or careless customer could send ImportPublicKey)."""

from __future__ import annotations

import base64
import functools
import json

from cryptography.hazmat.primitives.asymmetric import rsa

P25519 = 2**255 - 19
# u-coordinates of the points of order 1, 2, 4 and 8 on Curve25519 (and their non-canonical
# spellings p, p + 1): X25519 with any clamped scalar gives the all-zero shared secret.
_ORDER_8 = (
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
)
LOW_ORDER_U = {
    "zero": 0,
    "one": 1,
    "order 8 (a)": _ORDER_8[0],
    "order 8 (b)": _ORDER_8[1],
    "p - 1": P25519 - 1,
    "p": P25519,
    "p + 1": P25519 + 1,
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def low_order_x25519() -> dict[str, bytes]:
    """Every small-order point, canonically and with the (ignored) top bit set."""
    found: dict[str, bytes] = {}
    for name, u in LOW_ORDER_U.items():
        found[name] = u.to_bytes(32, "little")
        found[f"{name}, top bit set"] = (u | 1 << 255).to_bytes(32, "little")
    return found


def x25519_jwk(raw: bytes) -> str:
    return json.dumps({"kty": "OKP", "crv": "X25519", "x": _b64(raw)})


def rsa_jwk(n: int, e: int = 65537) -> str:
    def enc(v: int) -> str:
        return _b64(v.to_bytes((v.bit_length() + 7) // 8, "big"))

    return json.dumps({"kty": "RSA", "n": enc(n), "e": enc(e)})


@functools.cache
def unusable_rsa_moduli() -> dict[str, int]:
    """2048-bit moduli no private key could be made for (or that anyone could factor)."""
    big = rsa.generate_private_key(65537, 4096).private_numbers()
    small = rsa.generate_private_key(65537, 2048).private_numbers()
    three = 3 * ((2**2047 // 3) | 1)
    return {
        "even": 2**2047 + 2,
        "prime": big.p,  # a 2048-bit prime: not a product of two primes
        "square": small.p * small.p,  # p = q: phi(n) is not (p-1)(q-1)
        "small factor": three if three.bit_length() == 2048 else three * 2 + 3,
    }
