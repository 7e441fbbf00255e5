"""Key material: generation, public-key forms (PEM, JWK, fingerprint), import checks, challenges."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from jwcrypto import jwe, jwk

from phiseal_decrypt import xwing
from services.common.errors import InvalidArgument
from services.keysvc import pkcs8


class Algorithm(StrEnum):
    X25519 = "x25519"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    # X-Wing: ML-KEM-768 and X25519 together, so data stays closed if either one holds.
    MLKEM768_X25519 = "mlkem768-x25519"

    @property
    def rsa_bits(self) -> int:
        """The modulus size; 0 for the others."""
        return int(self.value.split("-")[1]) if self.value.startswith("rsa-") else 0

    @property
    def jwe_alg(self) -> str:
        """The JWE key-management algorithm fields are encrypted with."""
        if self is Algorithm.MLKEM768_X25519:
            return xwing.ALG_HPKE
        return "ECDH-ES+A256KW" if self is Algorithm.X25519 else "RSA-OAEP-256"


class Kdf(StrEnum):
    NONE = "none"
    SCRYPT = "scrypt"
    PBKDF2_SHA256 = "pbkdf2-sha256"


MAX_PUBLIC_KEY_TEXT = 64 * 1024
RSA_EXPONENT = 65537
# The decoder silently skips characters outside the alphabet; a key must not be that forgiving.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: Any, member: str) -> bytes:
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text):
        raise InvalidArgument(f'JWK member "{member}" must be a non-empty base64url string')
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidArgument(f'JWK member "{member}" is not valid base64url') from None


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@dataclass(frozen=True)
class PublicKey:
    """A validated public key, kept as its DER SubjectPublicKeyInfo."""

    algorithm: Algorithm
    der: bytes

    @property
    def pem(self) -> str:
        if self.algorithm is Algorithm.MLKEM768_X25519:
            return xwing.XWingPublicKey.from_spki_der(self.der).pem
        return (
            self._key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def fingerprint(self) -> str:
        """Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo."""
        return hashlib.sha256(self.der).hexdigest()

    def jwk(self, kid: str) -> str:
        """RFC 7517 JSON text with kid, use "enc" and the JWE algorithm to encrypt with."""
        if self.algorithm is Algorithm.MLKEM768_X25519:
            return xwing.jwk_text(xwing.XWingPublicKey.from_spki_der(self.der), kid)
        key = self._key()
        members: dict[str, str]
        if isinstance(key, x25519.X25519PublicKey):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            members = {"kty": "OKP", "crv": "X25519", "x": _b64url(raw)}
        else:
            assert isinstance(key, rsa.RSAPublicKey)
            numbers = key.public_numbers()
            members = {
                "kty": "RSA",
                "n": _b64url(_int_bytes(numbers.n)),
                "e": _b64url(_int_bytes(numbers.e)),
            }
        members |= {"use": "enc", "alg": self.algorithm.jwe_alg, "kid": kid}
        return json.dumps(members, separators=(",", ":"))

    def _key(self) -> x25519.X25519PublicKey | rsa.RSAPublicKey:
        key = serialization.load_der_public_key(self.der)
        assert isinstance(key, x25519.X25519PublicKey | rsa.RSAPublicKey)
        return key


PrivateKey = x25519.X25519PrivateKey | rsa.RSAPrivateKey | xwing.XWingPrivateKey


class KeyPair:
    """A freshly generated pair. The private half lives only in memory, for one response."""

    def __init__(self, private: PrivateKey, algorithm: Algorithm):
        self._private = private
        self.algorithm = algorithm
        if isinstance(private, xwing.XWingPrivateKey):
            spki = private.public.spki_der
        else:
            spki = private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        self.public = PublicKey(algorithm, spki)

    def __repr__(self) -> str:  # never let a debugger or log line print the private key
        return f"KeyPair({self.algorithm}, fingerprint={self.public.fingerprint})"

    def deliver(self, passphrase: str, kdf: Kdf) -> PrivateKeyDelivery:
        """The PKCS#8 PEM the caller receives; encrypted when a passphrase is given."""
        if isinstance(self._private, xwing.XWingPrivateKey):
            der = self._private.pkcs8_der
        else:
            der = self._private.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        if not passphrase:
            return PrivateKeyDelivery(pkcs8.pem("PRIVATE KEY", der).decode(), Kdf.NONE, 0)
        if kdf is Kdf.PBKDF2_SHA256:
            encrypted = pkcs8.encrypt_pbkdf2(der, passphrase)
        else:
            encrypted = pkcs8.encrypt_scrypt(der, passphrase)
        return PrivateKeyDelivery(encrypted.pem.decode(), Kdf(encrypted.kdf), encrypted.cost)


@dataclass(frozen=True, repr=False)
class PrivateKeyDelivery:
    """The private key as delivered once; repr hides it."""

    pem: str
    kdf: Kdf
    kdf_cost: int

    @property
    def passphrase_protected(self) -> bool:
        return self.kdf is not Kdf.NONE

    def __repr__(self) -> str:
        return f"PrivateKeyDelivery(kdf={self.kdf}, kdf_cost={self.kdf_cost})"


def generate(algorithm: Algorithm) -> KeyPair:
    """A new key pair (CPU-bound for RSA: run it off the event loop)."""
    if algorithm is Algorithm.X25519:
        return KeyPair(x25519.X25519PrivateKey.generate(), algorithm)
    if algorithm is Algorithm.MLKEM768_X25519:
        return KeyPair(xwing.XWingPrivateKey.generate(), algorithm)
    return KeyPair(rsa.generate_private_key(RSA_EXPONENT, algorithm.rsa_bits), algorithm)


_PRIVATE_KEY_SENT = (
    "this is a PRIVATE key — send only the public key; PHIseal must never see it "
    "(derive it with `openssl pkey -in key.pem -pubout`), and treat this private key as exposed"
)

_COMMON_PASSPHRASES = frozenset(
    {
        "password1234",
        "password12345",
        "password123456",
        "passw0rd1234",
        "123456789012",
        "qwertyuiop12",
        "qwerty123456",
        "iloveyou1234",
        "letmein12345",
        "welcome12345",
        "changeme1234",
        "administrator1",
        "correcthorsebatterystaple",
        "correct horse battery staple",
        "trustno1trustno1",
        "abcdefghijkl1",
        "abc123abc123",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "p@ssw0rd1234",
        "phiseal12345",
    }
)
MIN_PASSPHRASE = 12
MAX_PASSPHRASE = 1024


def check_passphrase(passphrase: str) -> None:
    """Refuses weak passphrases, saying why but never echoing the passphrase."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise InvalidArgument(
            f"passphrase is too short: use at least {MIN_PASSPHRASE} characters "
            "(a few random words work well)"
        )
    if len(passphrase) > MAX_PASSPHRASE:
        raise InvalidArgument(f"passphrase is too long: use at most {MAX_PASSPHRASE} characters")
    classes = {
        "lower" if c.islower() else "upper" if c.isupper() else "digit" if c.isdigit() else "other"
        for c in passphrase
    }
    if len(classes) < 2:
        raise InvalidArgument(
            "passphrase uses only one kind of character: mix letters with digits, "
            "capitals, spaces or symbols"
        )
    if passphrase.lower() in _COMMON_PASSPHRASES or len(set(passphrase)) < 4:
        raise InvalidArgument("passphrase is too common or repetitive: choose a less guessable one")


_P25519 = 2**255 - 19
# Odd primes below 2,000: a modulus with one of them as a factor is factored at once.
_SMALL_PRIMES = tuple(
    n for n in range(3, 2000, 2) if all(n % d for d in range(3, int(n**0.5) + 1, 2))
)
_FIX = "generate a new key pair with a standard tool and import its public key"


def _check_x25519(key: x25519.X25519PublicKey) -> None:
    """Refuses a public key no one could decrypt for: a small-order point (every shared secret
    all-zero, so every batch for the destination would fail) or a non-canonical encoding."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    u = int.from_bytes(raw, "little")
    try:
        # Clamped scalars are multiples of the cofactor 8: exactly the points of order 1, 2,
        # 4 or 8 give zero, whatever their spelling, and OpenSSL refuses a zero secret.
        x25519.X25519PrivateKey.generate().exchange(key)
    except ValueError:
        raise InvalidArgument(
            f"this X25519 public key is a small-order point: every shared secret with it is "
            f"all zeros, so nothing encrypted to it could be kept secret; {_FIX}"
        ) from None
    if u >= _P25519:
        raise InvalidArgument(
            "this X25519 public key is not in canonical form (RFC 7748: u below 2^255 - 19, "
            f"top bit clear), which no key generator produces; {_FIX}"
        )


def _probably_prime(n: int, rounds: int = 8) -> bool:
    """Miller-Rabin with fixed small bases: enough to tell a lone prime from an RSA modulus."""
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19)[:rounds]:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _check_rsa_modulus(n: int) -> None:
    """Refuses a modulus that cannot be the product of two large distinct primes."""
    why = None
    if n % 2 == 0:
        why = "is even"
    elif any(n % p == 0 for p in _SMALL_PRIMES):
        why = "has a small prime factor"
    elif math.isqrt(n) ** 2 == n:
        why = "is a perfect square"
    elif _probably_prime(n):
        why = "is prime"
    if why is not None:
        raise InvalidArgument(
            f"this RSA public key's modulus {why}: no usable private key exists for it (or "
            f"anyone could compute one); {_FIX}"
        )


def _from_loaded(key: object) -> PublicKey:
    if isinstance(key, x25519.X25519PublicKey):
        _check_x25519(key)
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return PublicKey(Algorithm.X25519, der)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in (2048, 3072, 4096):
            raise InvalidArgument(
                f"RSA key is {key.key_size} bits: use 2048, 3072 or 4096 bits "
                "(RSA keys below 2048 bits are too weak)"
            )
        if key.public_numbers().e != RSA_EXPONENT:
            raise InvalidArgument(
                f"RSA public exponent must be {RSA_EXPONENT}, the standard value "
                "every key generator uses"
            )
        _check_rsa_modulus(key.public_numbers().n)
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return PublicKey(Algorithm(f"rsa-{key.key_size}"), der)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise InvalidArgument(
            "this is an Ed25519/Ed448 signing key; encryption needs an X25519 key "
            "(`openssl genpkey -algorithm X25519`) or RSA"
        )
    if isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidArgument(
            f"elliptic-curve keys on {key.curve.name} are not supported: use X25519 or RSA"
        )
    if isinstance(key, x448.X448PublicKey | dsa.DSAPublicKey):
        raise InvalidArgument("this key type is not supported: use X25519 or RSA")
    raise InvalidArgument("this key type is not supported: use X25519 or RSA")


# id-XWing as DER: an SPKI naming it in its AlgorithmIdentifier is read here, not by
# ``cryptography`` (which does not know the OID), so a wrong length gets a precise message.
_XWING_OID_DER = bytes.fromhex("060b2b0601040183e62d81c87a")


def _xwing_public(der: bytes) -> PublicKey:
    try:
        key = xwing.XWingPublicKey.from_spki_der(der)
    except xwing.XWingError as exc:
        raise InvalidArgument(
            f"{exc}: an ML-KEM-768 + X25519 (X-Wing) public key is 1216 bytes, "
            "ML-KEM-768's encapsulation key followed by X25519's"
        ) from None
    try:
        # A small-order X25519 half makes every encapsulation fail (OpenSSL refuses the zero
        # secret), so every batch for the destination would; refuse it at import instead.
        x25519.X25519PrivateKey.generate().exchange(
            x25519.X25519PublicKey.from_public_bytes(key.x25519_raw)
        )
    except ValueError:
        raise InvalidArgument(
            "the X25519 half of this ML-KEM-768 + X25519 public key is a small-order point: "
            "nothing could be encrypted to it; generate a new key pair and import its public key"
        ) from None
    return PublicKey(Algorithm.MLKEM768_X25519, key.spki_der)


def parse_public_pem(text: str) -> PublicKey:
    """A public key from SubjectPublicKeyInfo (or PKCS#1 RSA) PEM, strictly validated."""
    if len(text) > MAX_PUBLIC_KEY_TEXT:
        raise InvalidArgument(f"public key text is over {MAX_PUBLIC_KEY_TEXT} characters")
    if "PRIVATE KEY" in text:
        raise InvalidArgument(_PRIVATE_KEY_SENT)
    if "BEGIN CERTIFICATE" in text:
        raise InvalidArgument(
            "this is a certificate: send its public key "
            "(`openssl x509 -in cert.pem -pubkey -noout`)"
        )
    if "-----BEGIN " not in text:
        raise InvalidArgument(
            'public_key_pem is not PEM: expected "-----BEGIN PUBLIC KEY-----"; '
            "for a JWK use public_key_jwk"
        )
    der = xwing.pem_body(text, "PUBLIC KEY")
    if der is not None and _XWING_OID_DER in der[:32]:
        return _xwing_public(der)
    try:
        key = serialization.load_pem_public_key(text.strip().encode())
    except UnsupportedAlgorithm:
        raise InvalidArgument("this key type is not supported: use X25519 or RSA") from None
    except ValueError:
        raise InvalidArgument(
            "public_key_pem could not be read as a public key: expected a PEM "
            '"-----BEGIN PUBLIC KEY-----" block (SubjectPublicKeyInfo)'
        ) from None
    return _from_loaded(key)


_JWK_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv")


def parse_public_jwk(text: str) -> PublicKey:
    """A public key from RFC 7517 JSON (kty RSA, OKP with crv X25519, or AKP for X-Wing)."""
    if len(text) > MAX_PUBLIC_KEY_TEXT:
        raise InvalidArgument(f"public key text is over {MAX_PUBLIC_KEY_TEXT} characters")
    try:
        members = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested arrays or objects; no JWK nests more than one level.
        raise InvalidArgument(
            "public_key_jwk is not valid JSON (or is nested too deeply)"
        ) from None
    if not isinstance(members, dict):
        raise InvalidArgument("public_key_jwk must be a JSON object (one JWK, not a JWK set)")
    if members.get("kty") == "oct":
        raise InvalidArgument("this is a symmetric (kty oct) key: send an RSA or X25519 public key")
    if any(m in members for m in _JWK_PRIVATE_MEMBERS):
        raise InvalidArgument(_PRIVATE_KEY_SENT)
    use = members.get("use")
    if use is not None and use != "enc":
        raise InvalidArgument(f'JWK "use" is {use!r}: an encryption key must have "use": "enc"')
    kty = members.get("kty")
    key: object
    if kty == "RSA":
        n = int.from_bytes(_b64url_decode(members.get("n"), "n"), "big")
        e = int.from_bytes(_b64url_decode(members.get("e"), "e"), "big")
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise InvalidArgument("JWK n/e do not form a valid RSA public key") from None
    elif kty == "OKP":
        crv = members.get("crv")
        if crv != "X25519":
            raise InvalidArgument(
                f"OKP curve {crv!r} is not supported: only X25519 can encrypt "
                "(Ed25519 is a signing key)"
            )
        raw = _b64url_decode(members.get("x"), "x")
        if len(raw) != 32:
            raise InvalidArgument('JWK "x" must be 32 bytes for X25519')
        key = x25519.X25519PublicKey.from_public_bytes(raw)
    elif kty == xwing.JWK_KTY:
        return _akp_public(members)
    elif kty == "EC":
        raise InvalidArgument(
            f"elliptic-curve keys (crv {members.get('crv')!r}) are not supported: use X25519 or RSA"
        )
    else:
        raise InvalidArgument(
            f'JWK "kty" {kty!r} is not supported: use "RSA", "OKP" (X25519) or '
            f'"AKP" with "alg": "{xwing.ALG_HPKE}" (ML-KEM-768 + X25519)'
        )
    public = _from_loaded(key)
    alg = members.get("alg")
    if alg is not None and alg != public.algorithm.jwe_alg:
        raise InvalidArgument(
            f'JWK "alg" is {alg!r}; PHIseal encrypts to this key with {public.algorithm.jwe_alg}'
        )
    return public


def _akp_public(members: dict[str, Any]) -> PublicKey:
    """draft-ietf-jose-hpke-pq-pqt: kty AKP (RFC 9964), "alg" required, "pub" the raw key."""
    alg = members.get("alg")
    if alg != xwing.ALG_HPKE:
        raise InvalidArgument(
            f'AKP key with "alg" {alg!r} is not supported: PHIseal encrypts to ML-KEM-768 + X25519 '
            f'keys with key encryption, "alg": "{xwing.ALG_HPKE}" (HPKE-9 is the integrated-'
            "encryption variant of the same key)"
        )
    raw = _b64url_decode(members.get("pub"), "pub")
    return _xwing_public(xwing.XWingPublicKey.SPKI_PREFIX + raw)


@dataclass(frozen=True, repr=False)
class Challenge:
    """A proof-of-possession challenge: the JWE goes to the caller, only the hash is kept."""

    jwe: str
    answer_hash: bytes


def make_challenge(public: PublicKey, kid: str) -> Challenge:
    """A random secret, encrypted to ``public`` as a compact JWE (enc A256GCM)."""
    answer = secrets.token_urlsafe(32)
    if public.algorithm is Algorithm.MLKEM768_X25519:
        # No JOSE library in Python knows HPKE yet: the kit's own HPKE-9-KE writer.
        key = xwing.XWingPublicKey.from_spki_der(public.der)
        token_text = xwing.seal_compact(key, {"kid": kid}, answer.encode())
        return Challenge(token_text, hash_secret(answer))
    token = jwe.JWE(
        answer.encode(),
        protected=json.dumps({"alg": public.algorithm.jwe_alg, "enc": "A256GCM", "kid": kid}),
    )
    token.add_recipient(jwk.JWK.from_pem(public.pem.encode()))
    return Challenge(token.serialize(compact=True), hash_secret(answer))


def hash_secret(text: str) -> bytes:
    """SHA-256 of a high-entropy secret (request id, challenge answer): what the database keeps."""
    return hashlib.sha256(text.encode()).digest()
