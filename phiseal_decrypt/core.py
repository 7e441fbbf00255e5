"""Keys chosen by kid, a cache of unwrapped content keys, and decryption of values and events."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from phiseal_decrypt import exactjson, pbes2, xwing
from phiseal_decrypt.jose import ALG_ECDH, ALG_RSA, BINDING_CLAIM, ENC, OAEP, ecdh_es_kek
from phiseal_decrypt.paths import PathFilter, Place

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_$@:\-]+")

PrivateKey = rsa.RSAPrivateKey | x25519.X25519PrivateKey | xwing.XWingPrivateKey
_KEY_TYPES = (rsa.RSAPrivateKey, x25519.X25519PrivateKey, xwing.XWingPrivateKey)
_SUPPORTED = "only RSA, X25519 and ML-KEM-768 + X25519 (X-Wing) private keys are supported"


class DecryptError(Exception):
    """A value could not be decrypted; the message says why and never contains plaintext."""


class WrongKey(DecryptError):
    """None of the private keys given opens this value; the message names the kid needed."""


class BindingMismatch(DecryptError):
    """The ciphertext authenticates a different event, field or destination than where it sits."""


class PassphraseRequired(DecryptError):
    """A private key file is passphrase-protected and no passphrase was given."""


@dataclass
class _Entry:
    key: PrivateKey
    kid: str | None  # the label the customer gave it, if any
    source: str
    # kids this key has opened: an ordering hint only. A kid is an unauthenticated header that
    # anyone with the public key can write, so it must never take a key away from another kid.
    opened: set[str] = field(default_factory=set)


@dataclass
class Keyring:
    """Private keys, each optionally labelled with its kid. A value's kid only orders the
    candidates (labelled for it, then known to open it, then the rest); every key is tried."""

    entries: list[_Entry] = field(default_factory=list)

    def add(self, key: PrivateKey, kid: str | None = None, source: str = "key") -> None:
        if not isinstance(key, _KEY_TYPES):
            raise DecryptError(f"{source}: {_SUPPORTED}")
        self.entries.append(_Entry(key, kid, source))

    def add_pem(
        self, pem: bytes, *, kid: str | None = None, passphrase: bytes | None = None, source: str
    ) -> None:
        hybrid = _load_xwing(pem, passphrase, source)
        if hybrid is not None:
            self.add(hybrid, kid, source)
            return
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase)
        except TypeError:
            if passphrase is None:
                raise PassphraseRequired(f"{source} is passphrase-protected") from None
            raise DecryptError(
                f"{source} is not passphrase-protected; omit the passphrase"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            hint = "; check the passphrase" if passphrase is not None else ""
            raise DecryptError(f"{source} is not a readable PKCS#8 private key PEM{hint}") from None
        if not isinstance(key, _KEY_TYPES):
            raise DecryptError(f"{source}: {_SUPPORTED}")
        self.add(key, kid, source)

    @classmethod
    def from_files(cls, specs: Iterable[str | Path], passphrase: bytes | None = None) -> Keyring:
        """``specs`` are paths, or ``kid=path`` to label a key with the kid it opens."""
        ring = cls()
        for spec in specs:
            kid, path = split_key_spec(str(spec))
            ring.add_pem(Path(path).read_bytes(), kid=kid, passphrase=passphrase, source=path)
        return ring

    def candidates(self, kid: str, rsa_only: bool = False) -> list[_Entry]:
        """Every key of a usable type: labelled ``kid`` first, then those that opened ``kid``
        before, then unlabelled ones, then those labelled for other kids."""
        usable = [e for e in self.entries if not rsa_only or isinstance(e.key, rsa.RSAPrivateKey)]

        def rank(entry: _Entry) -> int:
            if entry.kid == kid:
                return 0
            if kid in entry.opened:
                return 1
            return 2 if entry.kid is None else 3

        return sorted(usable, key=rank)  # stable: the customer's order within a rank

    def rsa_keys(self) -> list[rsa.RSAPrivateKey]:
        return [e.key for e in self.entries if isinstance(e.key, rsa.RSAPrivateKey)]


def _load_xwing(pem: bytes, passphrase: bytes | None, source: str) -> PrivateKey | None:
    """An X-Wing key from PKCS#8 PEM (plain or PBES2-protected), or None for other key types.

    ``cryptography`` does not know id-XWing, so these PEMs are read here."""
    text = pem.decode("ascii", errors="replace")
    der = xwing.pem_body(text, "PRIVATE KEY")
    if der is not None and xwing.is_xwing_pkcs8(der):
        if passphrase is not None:
            raise DecryptError(f"{source} is not passphrase-protected; omit the passphrase")
        return xwing.XWingPrivateKey.from_pkcs8_der(der)
    protected = xwing.pem_body(text, "ENCRYPTED PRIVATE KEY")
    if protected is None:
        return None
    try:
        # RSA and X25519 keys open through cryptography below; only an X-Wing key stops here.
        serialization.load_pem_private_key(pem, password=passphrase or b"-")
        return None
    except UnsupportedAlgorithm:
        pass
    except (TypeError, ValueError):
        return None
    if passphrase is None:
        raise PassphraseRequired(f"{source} is passphrase-protected")
    try:
        inner = pbes2.decrypt(protected, passphrase)
        return xwing.XWingPrivateKey.from_pkcs8_der(inner)
    except ValueError:
        raise DecryptError(f"{source} does not open with this passphrase; check it") from None


def split_key_spec(spec: str) -> tuple[str | None, str]:
    kid, sep, path = spec.partition("=")
    if sep and kid and not Path(spec).exists():
        return kid, path
    return None, spec


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def concrete_key(key: str, *, first: bool) -> str:
    """How one object key is spelled in a bound path (identical to PHIseal's field paths)."""
    if _SIMPLE_KEY.fullmatch(key):
        return key if first else f".{key}"
    return f"[{json.dumps(key, ensure_ascii=False)}]"


def looks_like_jwe(text: str) -> bool:
    """True for a compact JWE: five base64url parts whose header names an ``enc``."""
    if text.count(".") != 4 or not text.startswith("ey"):
        return False
    try:
        header = orjson.loads(_b64url_decode(text.split(".", 1)[0]))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "enc" in header


@dataclass(frozen=True)
class _Parsed:
    protected: str
    header: dict[str, Any]
    encrypted_key: str
    iv: bytes
    ciphertext: bytes
    tag: bytes


def _parse(token: str) -> _Parsed:
    parts = token.split(".")
    if len(parts) != 5:
        raise DecryptError("not a compact JWE: expected five dot-separated parts")
    try:
        header = orjson.loads(_b64url_decode(parts[0]))
        iv, ct, tag = (_b64url_decode(p) for p in parts[2:])
    except (ValueError, binascii.Error):
        raise DecryptError("not a compact JWE: a part is not base64url") from None
    if not isinstance(header, dict):
        raise DecryptError("not a compact JWE: the protected header is not a JSON object")
    if header.get("enc") != ENC or header.get("alg") not in (ALG_RSA, ALG_ECDH, xwing.ALG_HPKE):
        raise DecryptError(
            f"unsupported JWE algorithms alg={header.get('alg')!r} enc={header.get('enc')!r}; "
            f"PHIseal writes {ALG_RSA}, {ALG_ECDH} or {xwing.ALG_HPKE} with {ENC}"
        )
    if len(iv) != 12 or len(tag) != 16:
        raise DecryptError("not a PHIseal JWE: the IV must be 96 bits and the tag 128 bits")
    return _Parsed(parts[0], header, parts[1], iv, ct, tag)


class Decryptor:
    """Decrypts PHIseal values and events; caches unwrapped content keys (LRU) by default."""

    def __init__(self, keyring: Keyring, *, cache_size: int = 4096) -> None:
        self.keyring = keyring
        self._cache_size = cache_size
        self._ceks: OrderedDict[tuple[str, str, str], AESGCM] = OrderedDict()
        self.unwraps = 0  # private-key operations performed, for the curious and the benchmark

    def _unwrap(self, parsed: _Parsed) -> AESGCM:
        header = parsed.header
        kid = str(header.get("kid", ""))
        epk = header.get("epk")
        # The per-CEK public part: ECDH-ES's ephemeral key or HPKE's encapsulated secret.
        epk_x = str(epk.get("x", "")) if isinstance(epk, dict) else str(header.get("ek", ""))
        cache_key = (kid, parsed.encrypted_key, epk_x)
        if self._cache_size:
            cached = self._ceks.get(cache_key)
            if cached is not None:
                self._ceks.move_to_end(cache_key)
                return cached
        hybrid = header["alg"] == xwing.ALG_HPKE
        try:
            wrapped = _b64url_decode(parsed.encrypted_key)
            peer = (
                x25519.X25519PublicKey.from_public_bytes(_b64url_decode(epk_x))
                if header["alg"] == ALG_ECDH
                else None
            )
            ek = _b64url_decode(epk_x) if hybrid else None
        except (ValueError, binascii.Error):
            raise DecryptError(f"malformed encrypted key, epk or ek for kid {kid!r}") from None
        for entry in self.keyring.candidates(kid, rsa_only=peer is None and not hybrid):
            cek = _try_unwrap(entry.key, wrapped, peer, ek)
            if cek is not None:
                self.unwraps += 1
                if kid:
                    entry.opened.add(kid)  # later values with this kid try it first
                aead = AESGCM(cek)
                if self._cache_size:
                    self._ceks[cache_key] = aead
                    if len(self._ceks) > self._cache_size:
                        self._ceks.popitem(last=False)
                return aead
        raise WrongKey(
            f"no private key given opens kid {kid!r}: pass the private key delivered for "
            f"{kid!r} (rotated keys: one --key per version)"
        )

    def decrypt_value(
        self,
        token: str,
        *,
        message_id: str | None = None,
        path: str | None = None,
        destination_id: str | None = None,
    ) -> Any:
        """The original JSON value of one JWE field; checks the binding claims given."""
        parsed = _parse(token)
        claims = parsed.header.get(BINDING_CLAIM)
        if not isinstance(claims, dict):
            raise BindingMismatch("the JWE carries no PHIseal binding claims")
        for name, expected, what in (
            ("mid", message_id, "event (messageId)"),
            ("path", path, "field path"),
            ("dst", destination_id, "destination"),
        ):
            if expected is not None and claims.get(name) != expected:
                raise BindingMismatch(
                    f"the ciphertext at {path or 'this value'} was made for another {what}: "
                    f"it was moved or replayed"
                )
        aead = self._unwrap(parsed)
        try:
            plaintext = aead.decrypt(
                parsed.iv, parsed.ciphertext + parsed.tag, parsed.protected.encode("ascii")
            )
        except InvalidTag:
            raise DecryptError(
                f"the ciphertext at {path or 'this value'} fails authentication: it was altered"
            ) from None
        # Exactly the JSON that was sealed, big or unusual numbers included.
        return exactjson.loads(plaintext)

    def decrypt_challenge(self, token: str) -> str:
        """The text of a key-rotation challenge (a compact JWE without binding claims).

        ConfirmKey wants it back; for an ML-KEM-768 + X25519 key no general JOSE library opens
        HPKE-9-KE yet, so the kit does."""
        parsed = _parse(token)
        aead = self._unwrap(parsed)
        try:
            plaintext = aead.decrypt(
                parsed.iv, parsed.ciphertext + parsed.tag, parsed.protected.encode("ascii")
            )
        except InvalidTag:
            raise DecryptError("the challenge fails authentication: it was altered") from None
        return plaintext.decode("utf-8", errors="replace")

    def decrypt_segment(self, text: str) -> Any:
        """The original JSON value of one SEGMENT_RSA_OAEP field (base64 RSA-OAEP-SHA256)."""
        try:
            block = base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raise DecryptError("not a SEGMENT_RSA_OAEP value: not base64") from None
        keys = self.keyring.rsa_keys()
        for key in keys:
            if key.key_size // 8 != len(block):
                continue
            try:
                plaintext = key.decrypt(block, OAEP)
            except ValueError:
                continue
            self.unwraps += 1
            try:
                return exactjson.loads(plaintext)
            except orjson.JSONDecodeError:
                return plaintext.decode("utf-8", errors="replace")
        raise WrongKey(
            "no RSA private key given opens this SEGMENT_RSA_OAEP value "
            f"({len(block) * 8}-bit block); pass the destination's RSA private key"
        )

    def _is_segment(self, text: str, sizes: set[int]) -> bool:
        if not sizes or len(text) % 4 or len(text) < 100:
            return False
        try:
            return len(base64.b64decode(text, validate=True)) in sizes
        except (ValueError, binascii.Error):
            return False

    def decrypt_event(
        self,
        event: dict[str, Any],
        *,
        segment: bool = False,
        destination_id: str | None = None,
        only: Sequence[str] | PathFilter | None = None,
        errors: list[tuple[str, DecryptError]] | None = None,
    ) -> dict[str, Any]:
        """A copy of ``event`` with every PHIseal JWE (and, if ``segment``, SEGMENT) value opened.

        Each JWE's binding claims must match the event's messageId and the path it sits at.
        ``only`` (the policy's field paths) limits decryption to values at those paths or at a
        prefix of one; anything else is left as it came, even if it looks like ciphertext.
        With ``errors``, a value that fails is left as it came and (path, error) is appended;
        without, the first failure raises.
        """
        message_id = event.get("messageId")
        mid = message_id if isinstance(message_id, str) else ""
        sizes = {k.key_size // 8 for k in self.keyring.rsa_keys()} if segment else set()
        wanted = PathFilter(only) if only is not None and not isinstance(only, PathFilter) else only

        def open_value(node: str, path: str) -> Any:
            try:
                if looks_like_jwe(node):
                    return self.decrypt_value(
                        node, message_id=mid, path=path, destination_id=destination_id
                    )
                if self._is_segment(node, sizes):
                    return self.decrypt_segment(node)
            except DecryptError as exc:
                if errors is None:
                    raise
                errors.append((path, exc))
            return node

        def walk(node: Any, path: str, place: Place) -> Any:
            if wanted is not None and not wanted.on_path(place):
                return node
            if isinstance(node, str):
                return open_value(node, path)
            if isinstance(node, dict):
                return {
                    k: walk(v, path + concrete_key(k, first=not path), (*place, k))
                    for k, v in node.items()
                }
            if isinstance(node, list):
                return [walk(v, f"{path}[{i}]", (*place, i)) for i, v in enumerate(node)]
            return node

        return {
            key: walk(value, concrete_key(key, first=True), (key,)) if key != "messageId" else value
            for key, value in event.items()
        }


def _try_unwrap(
    key: PrivateKey, wrapped: bytes, peer: x25519.X25519PublicKey | None, ek: bytes | None
) -> bytes | None:
    if isinstance(key, xwing.XWingPrivateKey):
        cek = xwing.unwrap(key, ek, wrapped, ENC) if ek is not None else None
        # A 32-byte CEK only: A256GCM's key size, as JWE requires of the unwrapped key.
        return cek if cek is not None and len(cek) == 32 else None
    if ek is not None:
        return None
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            if peer is not None or key.key_size // 8 != len(wrapped):
                return None
            return key.decrypt(wrapped, OAEP)
        if peer is None:
            return None
        return aes_key_unwrap(ecdh_es_kek(key.exchange(peer)), wrapped)
    except (ValueError, InvalidUnwrap):
        return None


ErrorSink = Callable[[int, str, DecryptError], None]


def decrypt_lines(
    decryptor: Decryptor,
    lines: Sequence[bytes] | Iterable[bytes],
    *,
    segment: bool = False,
    only: Sequence[str] | None = None,
    on_error: ErrorSink | None = None,
) -> Iterable[bytes]:
    """Decrypts JSON lines; yields one JSON line (with newline) per non-blank input line.

    With ``on_error(line_number, path, error)``, a line or value that fails is reported and the
    file goes on (the value, or an unreadable line, is written as it came); without, it raises.
    """
    wanted = PathFilter(only) if only is not None else None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = exactjson.loads(line)
            if not isinstance(event, dict):
                raise DecryptError("not a JSON object")
        except (orjson.JSONDecodeError, DecryptError) as exc:
            error = exc if isinstance(exc, DecryptError) else DecryptError("not valid JSON")
            if on_error is None:
                raise DecryptError(f"line {number}: {error}") from None
            on_error(number, "", error)
            yield line.rstrip(b"\r\n") + b"\n"
            continue
        failed: list[tuple[str, DecryptError]] | None = [] if on_error is not None else None
        try:
            opened = decryptor.decrypt_event(event, segment=segment, only=wanted, errors=failed)
        except DecryptError as exc:
            raise type(exc)(f"line {number}: {exc}") from None
        for path, problem in failed or ():
            assert on_error is not None
            on_error(number, path, problem)
        yield orjson.dumps(opened) + b"\n"
