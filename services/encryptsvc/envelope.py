"""Per-field ciphertext: compact JWE bound to its place, or Segment-compatible raw RSA-OAEP.

One content-encryption key (CEK) per batch per key version is wrapped once to the recipient's
public key (RSA-OAEP-256, or ECDH-ES+A256KW with one ephemeral X25519 key per CEK), and every
field of the batch is sealed under it with AES-256-GCM and a fresh random 96-bit IV. The
protected header (the GCM additional data) names the key and binds the ciphertext to the
destination, the event's messageId and the field's concrete path. Sharing ``encrypted_key`` and
``epk`` across a batch's fields is valid JWE, and is what lets a decryptor cache the unwrapped
CEK. A hybrid ML-KEM-768 + X25519 key wraps the CEK with HPKE instead (``HpkeSealer``,
"alg" HPKE-9-KE): its 1,120-byte encapsulated secret rides in every field's protected header.
docs/format.md is the specification of this module's output.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

# The kit customers decrypt with defines the format's parameters; encrypting with the same
# definitions keeps the two from drifting apart.
from phiseal_decrypt import xwing
from phiseal_decrypt.jose import ALG_ECDH, ALG_RSA, BINDING_CLAIM, ENC, OAEP, ecdh_es_kek
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.selection import Located
from services.common.vocabulary import EncryptionFormat

try:  # built from _fastseal.c when the machine can compile it (pyproject.toml, ext-modules)
    from services.encryptsvc import _fastseal
except ImportError:  # pragma: no cover - exercised on machines without a C compiler
    _fastseal = None  # type: ignore[assignment]

# Which per-field sealing runs: "native" (C, _fastseal) or "python" (JweSealer.seal's own code,
# the same bytes). Logged at startup.
SEALING = "python" if _fastseal is None else "native"

# NIST SP 800-38D allows 2^32 random-IV invocations per key; we retire a CEK far earlier.
MAX_CEK_USES = 2**20

# RSA-OAEP with SHA-256 carries at most k - 2*hLen - 2 bytes (RFC 8017 §7.1.1).
_OAEP_OVERHEAD = 2 * 32 + 2

PublicKey = rsa.RSAPublicKey | x25519.X25519PublicKey | xwing.XWingPublicKey


class ValueTooLong(Exception):
    """A value does not fit the SEGMENT_RSA_OAEP format's single RSA block."""

    def __init__(self, length: int, limit: int, path: str = "") -> None:
        super().__init__(f"{length} bytes encoded, the key carries at most {limit}")
        self.length = length
        self.limit = limit
        self.path = path  # the field's concrete path, when sealed by seal_into


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_b2a = binascii.b2a_base64
# IVs drawn from the OS at once (one system call per this many fields, not one per field).
_IVS_PER_DRAW = 128
# Paths' JSON kept per sealer (one batch); past this many distinct paths the cache restarts.
_PATH_CACHE = 1024


def b64url_length(n: int) -> int:
    """Characters of unpadded base64url for ``n`` bytes."""
    return (4 * n + 2) // 3


def b64url(data: bytes) -> str:
    # base64.urlsafe_b64encode without its two Python frames.
    return _b2a(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class RecipientKey:
    """The public key a destination's data is encrypted to, with the kid naming it."""

    kid: str
    public_key: PublicKey

    @classmethod
    def from_pem(cls, kid: str, pem: str) -> RecipientKey:
        der = xwing.pem_body(pem, "PUBLIC KEY")
        if der is not None and der.startswith(xwing.XWingPublicKey.SPKI_PREFIX):
            try:
                return cls(kid, xwing.XWingPublicKey.from_spki_der(der))
            except xwing.XWingError:
                raise FailedPrecondition(
                    f"the public key {kid} is not a valid ML-KEM-768 + X25519 key; "
                    "re-import or regenerate the destination's key"
                ) from None
        try:
            key = serialization.load_pem_public_key(pem.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            raise FailedPrecondition(
                f"the public key {kid} is not a readable SubjectPublicKeyInfo PEM; "
                "re-import or regenerate the destination's key"
            ) from None
        if not isinstance(key, rsa.RSAPublicKey | x25519.X25519PublicKey):
            raise FailedPrecondition(
                f"the public key {kid} is neither RSA nor X25519; regenerate the destination's key"
            )
        return cls(kid, key)

    @property
    def is_rsa(self) -> bool:
        return isinstance(self.public_key, rsa.RSAPublicKey)

    @property
    def algorithm(self) -> str:
        if isinstance(self.public_key, xwing.XWingPublicKey):
            return xwing.ALG_HPKE
        return ALG_RSA if self.is_rsa else ALG_ECDH


class Sealer(Protocol):
    """Seals the fields of one batch; ``seal`` returns the ciphertext string for a value."""

    # Content keys made and wrapped so far (0 for a format without them).
    ceks_issued: int

    def seal(self, plaintext: bytes, message_id: str, path: str) -> str: ...

    def seal_into(self, plaintexts: list[bytes], located: list[Located], message_id: str) -> None:
        """Seals one event's values: plaintexts[i] into its place located[i] (container, key,
        path), as ``seal`` would one by one."""
        ...

    def sealed_length(self, plaintext_length: int, message_id: str, path: str) -> int:
        """The length of what ``seal`` returns for a plaintext this long, without sealing."""
        ...

    @property
    def binds(self) -> bool:
        """True when the ciphertext carries messageId and path (so they must exist)."""
        ...


def plaintexts_of(located: list[Located]) -> tuple[list[bytes], int, int]:
    """Each located value as the JSON that is sealed, with the sums the output budget needs:
    over fields, (4 * (len(plaintext) + len(path))) // 3 - len(plaintext) (JWE's base64url of
    value and path, less the value's bytes) and len(plaintext). In C when built: one call per
    event instead of a Python loop per field (0.5 us of a 14 us event, A/B)."""
    if SEALING == "native":
        return _fastseal.plaintexts(located, orjson.dumps)
    return _python_plaintexts(located)


def _python_plaintexts(located: list[Located]) -> tuple[list[bytes], int, int]:
    plaintexts: list[bytes] = []
    growth = total = 0
    for container, key, path in located:
        plaintext = orjson.dumps(container[key])  # type: ignore[index]
        plaintexts.append(plaintext)
        growth += (4 * (len(plaintext) + len(path))) // 3 - len(plaintext)
        total += len(plaintext)
    return plaintexts, growth, total


def seal_each(
    sealer: Sealer, plaintexts: list[bytes], located: list[Located], message_id: str
) -> None:
    """``seal_into`` one field at a time: every sealer's way without a faster one."""
    seal = sealer.seal
    for plaintext, (container, key, path) in zip(plaintexts, located, strict=True):
        try:
            container[key] = seal(plaintext, message_id, path)  # type: ignore[index]
        except ValueTooLong as exc:
            exc.path = path
            raise


def new_sealer(
    fmt: EncryptionFormat,
    key: RecipientKey,
    destination_id: str,
    *,
    max_uses: int = MAX_CEK_USES,
    rng: Callable[[int], bytes] = os.urandom,
    native: bool = SEALING == "native",
) -> Sealer:
    """A sealer for one batch, or FailedPrecondition if the format cannot use this key."""
    if fmt is EncryptionFormat.SEGMENT_RSA_OAEP:
        if not isinstance(key.public_key, rsa.RSAPublicKey):
            kind = "X25519" if key.algorithm == ALG_ECDH else "ML-KEM-768 + X25519"
            raise FailedPrecondition(
                f"the policy asks for the SEGMENT_RSA_OAEP format but the destination's active "
                f"key {key.kid} is {kind}; regenerate an RSA key or switch the policy to JWE"
            )
        return SegmentSealer(key.public_key)
    if fmt is not EncryptionFormat.JWE:
        raise InvalidArgument(f"unknown encryption format {fmt!r}")
    if isinstance(key.public_key, xwing.XWingPublicKey):
        return HpkeSealer(key, destination_id, max_uses=max_uses, rng=rng, native=native)
    return JweSealer(key, destination_id, max_uses=max_uses, rng=rng, native=native)


class JweSealer:
    """Compact JWE per field under a CEK shared by the batch and rolled past ``max_uses``."""

    def __init__(
        self,
        key: RecipientKey,
        destination_id: str,
        *,
        max_uses: int = MAX_CEK_USES,
        rng: Callable[[int], bytes] = os.urandom,
        native: bool = SEALING == "native",
    ) -> None:
        if max_uses < 1:
            raise ValueError("max_uses must be positive")
        if native and _fastseal is None:
            raise ValueError("the native sealer is not built on this machine")
        self._native_sealing = native
        # The C sealer of the current content key (None: seal in Python, with _aead).
        self._native: _fastseal.Sealer | None = None
        self._key = key
        self._destination_id = destination_id
        self._max_uses = max_uses
        self._rng = rng
        self._uses = max_uses  # forces a CEK on first use
        self._aead = AESGCM(bytes(32))
        self._encrypted_key = ""
        self._header_prefix = b""
        self.ceks_issued = 0
        # Encoded once per CEK (_encode_constants): the header's leading whole base64 groups,
        # the bytes left over, and ".<encrypted key>." (the same in every field).
        self._protected_head = b""
        self._header_tail = b""
        self._middle = b""
        # Once per event: the header from the leftover bytes through "path":.
        self._message_id: str | None = None
        self._event_head = b""
        self._path_json: dict[str, bytes] = {}
        self._ivs = b""
        self._iv_at = 0
        # Every CEK's header and wrapped key have the same lengths (the epk is always 32 bytes,
        # the wrapped CEK one RSA block or 40 bytes of AES key wrap): known before the first.
        is_rsa = isinstance(key.public_key, rsa.RSAPublicKey)
        self._prefix_length = len(self._prefix(None if is_rsa else "A" * b64url_length(32)))
        wrapped = (
            key.public_key.key_size // 8 if isinstance(key.public_key, rsa.RSAPublicKey) else 40
        )
        self._wrapped_length = b64url_length(wrapped)

    @property
    def binds(self) -> bool:
        return True

    def _prefix(self, epk_x: str | None) -> bytes:
        """The header of every field of one CEK, up to "mid": encoded once per CEK. orjson keeps
        insertion order and writes no spaces, so the bytes equal orjson.dumps of the header."""
        header: dict[str, Any] = {"alg": self._key.algorithm, "enc": ENC, "kid": self._key.kid}
        if epk_x is not None:
            header["epk"] = {"kty": "OKP", "crv": "X25519", "x": epk_x}
        header[BINDING_CLAIM] = {"dst": self._destination_id}
        return orjson.dumps(header)[:-2] + b',"mid":'

    def _roll(self) -> None:
        cek = self._rng(32)
        public = self._key.public_key
        epk_x: str | None = None
        if isinstance(public, rsa.RSAPublicKey):
            wrapped = public.encrypt(cek, OAEP)
        else:
            assert isinstance(public, x25519.X25519PublicKey)  # X-Wing keys use HpkeSealer
            ephemeral = x25519.X25519PrivateKey.generate()
            kek = ecdh_es_kek(ephemeral.exchange(public))
            wrapped = aes_key_wrap(kek, cek)
            epk = ephemeral.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            epk_x = b64url(epk)
        self._use_cek(cek)
        self._encrypted_key = b64url(wrapped)
        self._header_prefix = self._prefix(epk_x)
        self._uses = 0
        self.ceks_issued += 1
        self._encode_constants()

    def _use_cek(self, cek: bytes) -> None:
        """Seals with ``cek`` from now on: in C when built, else with cryptography's AESGCM."""
        if self._native_sealing:
            self._native = _fastseal.Sealer(cek)
        else:
            self._aead = AESGCM(cek)

    def _encode_constants(self) -> None:
        """What every field of this CEK shares, encoded once. Base64 maps each 3 bytes to 4
        characters on its own, so the header's first 3k bytes encode to the same characters
        whatever follows them: only the rest of the header is encoded per field."""
        whole = len(self._header_prefix) - len(self._header_prefix) % 3
        self._protected_head = (
            _b2a(self._header_prefix[:whole], newline=False).translate(_URLSAFE).rstrip(b"=")
        )
        self._header_tail = self._header_prefix[whole:]
        self._middle = b"." + self._encrypted_key.encode("ascii") + b"."
        self._message_id = None

    def _ivs_for(self, n: int) -> bytes:
        """12 * n bytes: the IVs of n fields (one field's for ``seal``), drawn from the OS
        _IVS_PER_DRAW at a time."""
        at, end = self._iv_at, self._iv_at + 12 * n
        if end > len(self._ivs):
            self._ivs, at, end = self._rng(12 * max(_IVS_PER_DRAW, n)), 0, 12 * n
        self._iv_at = end
        return self._ivs[at:end]

    def _closing(self, path: str) -> bytes:
        """The end of the protected header for a field at ``path``, kept for the batch."""
        if len(self._path_json) >= _PATH_CACHE:
            self._path_json.clear()
        closing = self._path_json[path] = orjson.dumps(path) + b"}}"
        return closing

    def _event(self, message_id: str) -> None:
        if message_id != self._message_id:  # the fields of one event come one after another
            self._message_id = message_id
            self._event_head = self._header_tail + orjson.dumps(message_id) + b',"path":'

    def seal_into(self, plaintexts: list[bytes], located: list[Located], message_id: str) -> None:
        n = len(plaintexts)
        if self._uses + n > self._max_uses and n <= self._max_uses:
            # A fresh content key for the whole event (the one before retires a few uses early,
            # never late): the event's fields then go to C in one call.
            self._roll()
        native = self._native
        if native is None or self._uses + n > self._max_uses:
            # No C sealer, or more fields than one content key may seal.
            seal_each(self, plaintexts, located, message_id)
            return
        self._uses += n
        self._event(message_id)
        # One call for the event's fields: seal's steps per field, in C (the per-field Python
        # around each seal call was two thirds of a field's cost).
        native.seal_into(
            self._protected_head,
            self._event_head,
            self._middle,
            self._ivs_for(n),
            plaintexts,
            located,
            self._path_json,
            self._closing,
        )

    def sealed_length(self, plaintext_length: int, message_id: str, path: str) -> int:
        header = self._prefix_length + len(orjson.dumps(message_id)) + 8 + len(orjson.dumps(path))
        # b64url_length of the header (+ "}}"), the IV (16) and the tag (22), inlined: this runs
        # once per event and the calls were most of its cost.
        return (
            (4 * (header + 2) + 2) // 3
            + self._wrapped_length
            + 16
            + (4 * plaintext_length + 2) // 3
            + 22
            + 4
        )

    def seal(self, plaintext: bytes, message_id: str, path: str) -> str:
        if self._uses >= self._max_uses:
            self._roll()
        self._uses += 1
        self._event(message_id)
        closing = self._path_json.get(path) or self._closing(path)
        if self._native is not None:
            # The same steps as below, in C: one call instead of some twenty (2.85 -> 1.10 us).
            return self._native.seal(
                self._protected_head,
                self._event_head + closing,
                self._middle,
                self._ivs_for(1),
                plaintext,
            )
        protected = self._protected_head + _b2a(
            self._event_head + closing, newline=False
        ).translate(_URLSAFE).rstrip(b"=")
        iv = self._ivs_for(1)
        sealed = self._aead.encrypt(iv, plaintext, protected)
        n = len(sealed) - 16
        # The IV is 12 bytes (16 characters, no padding) and the tag 16 (22 characters and
        # "=="): the three are encoded in standard base64 and made URL-safe together.
        rest = (
            _b2a(iv, newline=False)
            + b"."
            + _b2a(sealed[:n], newline=False).rstrip(b"=")
            + b"."
            + _b2a(sealed[n:], newline=False)[:22]
        )
        return (protected + self._middle + rest.translate(_URLSAFE)).decode("ascii")


class HpkeSealer(JweSealer):
    """JweSealer for an ML-KEM-768 + X25519 key: the CEK wrapped with HPKE-9-KE, once per CEK.

    Only the wrapping differs; ``seal`` is JweSealer's. The encapsulated secret ("ek") must sit in
    the protected header (compact JWE has no other), so every field of a batch repeats it."""

    def __init__(
        self,
        key: RecipientKey,
        destination_id: str,
        *,
        max_uses: int = MAX_CEK_USES,
        rng: Callable[[int], bytes] = os.urandom,
        native: bool = SEALING == "native",
    ) -> None:
        super().__init__(key, destination_id, max_uses=max_uses, rng=rng, native=native)
        # The output budget predicts each field's length before sealing: the header carries the
        # ~1.5 KB "ek" instead of an epk, and the wrapped CEK is an HPKE ciphertext (CEK + tag).
        self._prefix_length = len(self._hpke_prefix("A" * b64url_length(xwing.ENC_BYTES)))
        self._wrapped_length = b64url_length(32 + 16)

    def _hpke_prefix(self, ek: str) -> bytes:
        header: dict[str, Any] = {
            "alg": xwing.ALG_HPKE,
            "enc": ENC,
            "kid": self._key.kid,
            "ek": ek,
            BINDING_CLAIM: {"dst": self._destination_id},
        }
        return orjson.dumps(header)[:-2] + b',"mid":'

    def _roll(self) -> None:
        cek = self._rng(32)
        public = self._key.public_key
        assert isinstance(public, xwing.XWingPublicKey)
        ek, wrapped = xwing.wrap(public, cek, ENC)
        self._use_cek(cek)
        self._encrypted_key = b64url(wrapped)
        self._header_prefix = self._hpke_prefix(b64url(ek))
        self._uses = 0
        self.ceks_issued += 1
        # The ~1.6 KB before "mid" (the encapsulated secret) is base64url-encoded once here.
        self._encode_constants()


class SegmentSealer:
    """Segment's format: standard base64 of RSA-OAEP-SHA256(value). No kid, no binding."""

    ceks_issued = 0  # every value is its own public-key operation

    def __init__(self, public_key: rsa.RSAPublicKey) -> None:
        self._public_key = public_key
        self.limit = public_key.key_size // 8 - _OAEP_OVERHEAD

    @property
    def binds(self) -> bool:
        return False

    def sealed_length(self, plaintext_length: int, message_id: str, path: str) -> int:
        # One RSA block whatever the value; standard base64 with padding.
        return 4 * ((self._public_key.key_size // 8 + 2) // 3)

    def seal_into(self, plaintexts: list[bytes], located: list[Located], message_id: str) -> None:
        seal_each(self, plaintexts, located, message_id)

    def seal(self, plaintext: bytes, message_id: str, path: str) -> str:
        if len(plaintext) > self.limit:
            raise ValueTooLong(len(plaintext), self.limit)
        return base64.b64encode(self._public_key.encrypt(plaintext, OAEP)).decode("ascii")
