"""The C sealer (services/encryptsvc/_fastseal.c) writes what JweSealer.seal's Python code writes.

With the same random source both sealers draw the same content keys and IVs; only RSA-OAEP's own
padding randomness (inside OpenSSL, not the sealer's) differs, so for RSA every segment but the
wrapped key must be byte-identical; for X25519 and hybrid keys (a fresh ephemeral key per content
key) the kit must open every field of both to its value. make install builds the extension
(pyproject.toml, ext-modules): these tests fail, not skip, where it was not built.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from phiseal_decrypt import Decryptor, Keyring
from services.common.selection import Located
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc import _fastseal
from services.encryptsvc.envelope import SEALING, JweSealer, new_sealer
from tests.encryptsvc.keys import KeyPair, hybrid_key, rsa_key, x25519_key

KEYS: dict[str, Callable[[], KeyPair]] = {
    "rsa": rsa_key,
    "x25519": x25519_key,
    "hybrid": hybrid_key,
}


# Plaintexts of every length modulo 3 (base64 tails), empty, one that is not JSON text, large;
# messageIds and paths with characters JSON escapes, of every length modulo 3.
def path(n: int) -> str:
    return "traits." + "é" * (n % 4) + 'a["q\\"' + str(n % 3) + '"]'


CASES = [
    *[(orjson.dumps("v" * n), "m" + "x" * (n % 5), path(n)) for n in range(40)],
    (b"", "m-empty", "traits.e"),
    (bytes(range(256)), "m-bytes", "properties.raw"),
    (orjson.dumps({"a": ["z" * 70_000]}), "m-big", "properties.big"),
    (orjson.dumps(12345678901234567890), "\u2028", "a[3]"),
]


def is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


JSON_CASES = [case for case in CASES if is_json(case[0])]


def same_randomness(seed: int) -> Callable[[int], bytes]:
    source = random.Random(seed)
    return source.randbytes


def test_the_native_sealer_is_built_and_used_by_default() -> None:
    assert SEALING == "native"
    assert new_sealer(EncryptionFormat.JWE, rsa_key().recipient, "dest_1")._native_sealing  # type: ignore[attr-defined]


def test_rsa_tokens_are_byte_identical_but_the_wrapped_key() -> None:
    key = rsa_key().recipient

    def tokens(native: bool) -> list[list[str]]:
        sealer = JweSealer(key, "dest_1", max_uses=7, rng=same_randomness(3), native=native)
        return [sealer.seal(p, mid, at).split(".") for p, mid, at in CASES]

    c, python = tokens(True), tokens(False)
    assert [t[:1] + t[2:] for t in c] == [t[:1] + t[2:] for t in python]
    assert all(len(t[1]) == len(u[1]) for t, u in zip(c, python, strict=True))


@pytest.mark.parametrize("kind", list(KEYS))
@pytest.mark.parametrize("native", [True, False])
def test_the_kit_opens_every_field_of_both(kind: str, native: bool) -> None:
    key = KEYS[kind]()
    sealer = new_sealer(EncryptionFormat.JWE, key.recipient, "dest_1", max_uses=5, native=native)
    sealed = [sealer.seal(p, mid, at) for p, mid, at in JSON_CASES]
    ring = Keyring()
    ring.add(key.private)
    decryptor = Decryptor(ring)
    opened = [
        orjson.dumps(decryptor.decrypt_value(token, message_id=mid, path=at))
        for token, (_, mid, at) in zip(sealed, JSON_CASES, strict=True)
    ]
    assert opened == [p for p, _, _ in JSON_CASES]


def test_the_c_sealer_refuses_what_it_cannot_do_safely() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        _fastseal.Sealer(b"short")
    sealer = _fastseal.Sealer(bytes(32))
    with pytest.raises(ValueError, match="12 bytes"):
        sealer.seal(b"h", b"r", b".k.", bytes(11), b"x")
    with pytest.raises(ValueError, match="ASCII"):
        sealer.seal("é".encode(), b"r", b".k.", bytes(12), b"x")
    with pytest.raises(ValueError, match="ASCII"):
        sealer.seal(b"h", b"r", b".\xff.", bytes(12), b"x")
    # The ASCII check is remembered only for immutable bytes: a bytearray changed after a
    # successful call is checked again.
    head = bytearray(b"h")
    assert sealer.seal(head, b"r", b".k.", bytes(12), b"x").startswith("h")  # type: ignore[arg-type]
    head[0] = 0xFF
    with pytest.raises(ValueError, match="ASCII"):
        sealer.seal(head, b"r", b".k.", bytes(12), b"x")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="set once"):
        sealer.__init__(bytes(32))  # type: ignore[misc]
    with pytest.raises(TypeError):
        sealer.seal(b"h", b"r", b".k.", bytes(12))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        sealer.seal("h", b"r", b".k.", bytes(12), b"x")  # type: ignore[arg-type]
    unkeyed = _fastseal.Sealer.__new__(_fastseal.Sealer)
    with pytest.raises(RuntimeError, match="not given a key"):
        unkeyed.seal(b"h", b"r", b".k.", bytes(12), b"x")


def _event_fields(
    cases: list[tuple[bytes, str, str]],
) -> tuple[list[bytes], list[Located], list[Any]]:
    """The cases as one event's fields: plaintexts, their places in a list, and that list."""
    holder: list[Any] = [None] * len(cases)
    located: list[Located] = [(holder, i, at) for i, (_, _, at) in enumerate(cases)]
    return [p for p, _, _ in cases], located, holder


@pytest.mark.parametrize("native", [True, False])
def test_seal_into_writes_what_seal_writes(native: bool) -> None:
    """One event's fields sealed in one call equal the same fields sealed one by one (RSA: all
    but the wrapped key, whose padding OpenSSL draws), in C and in Python alike."""
    key = rsa_key().recipient
    cases = [(p, "m-1", at) for p, _, at in CASES]
    one_by_one = JweSealer(key, "dest_1", rng=same_randomness(5), native=native)
    expected = [one_by_one.seal(p, mid, at).split(".") for p, mid, at in cases]
    together = JweSealer(key, "dest_1", rng=same_randomness(5), native=native)
    plaintexts, located, holder = _event_fields(cases)
    together.seal_into(plaintexts, located, "m-1")
    got = [token.split(".") for token in holder]
    assert [t[:1] + t[2:] for t in got] == [t[:1] + t[2:] for t in expected]


@pytest.mark.parametrize("kind", list(KEYS))
def test_seal_into_keeps_every_content_key_within_its_uses(kind: str) -> None:
    """Events of 1-7 fields under max_uses=4: an event that does not fit the current content key
    gets a fresh one (the old one retires early, never late), one larger than max_uses is
    sealed field by field across keys; the kit opens every field."""
    pair = KEYS[kind]()
    sealer = new_sealer(EncryptionFormat.JWE, pair.recipient, "dest_1", max_uses=4)
    ring = Keyring()
    ring.add(pair.private)
    decryptor = Decryptor(ring)
    uses: dict[str, int] = {}
    for size in [1, 3, 2, 4, 7, 1, 5, 4]:
        cases = [(orjson.dumps(f"v{size}-{i}"), f"m{size}", f"p[{i}]") for i in range(size)]
        plaintexts, located, holder = _event_fields(cases)
        sealer.seal_into(plaintexts, located, f"m{size}")
        for token, (plaintext, mid, at) in zip(holder, cases, strict=True):
            assert (
                orjson.dumps(decryptor.decrypt_value(token, message_id=mid, path=at)) == plaintext
            )
            segments = token.split(".")
            # A hybrid key's wrapping rides in the header ("ek"); the others' in segment 2.
            header = orjson.loads(base64.urlsafe_b64decode(segments[0] + "=="))
            wrapped = header.get("ek", segments[1])
            uses[wrapped] = uses.get(wrapped, 0) + 1
    assert max(uses.values()) <= 4
    assert sealer.ceks_issued == len(uses)


def test_seal_into_refuses_what_it_cannot_do_safely() -> None:
    """Wrong inputs raise (never crash, never a half-formed token): the C checks each."""
    sealer = _fastseal.Sealer(bytes(32))
    holder: list[Any] = [None, None]
    located: list[Located] = [(holder, 0, "a"), (holder, 1, "b")]
    closings = {"a": b'"a"}}', "b": b'"b"}}'}

    def closing(path: str) -> bytes:
        raise AssertionError("every path is in closings")

    def seal_into(*args: Any) -> None:
        sealer.seal_into(*args)

    good = [b"h", b"e", b".k.", bytes(24), [b"1", b"2"], located, closings, closing]
    seal_into(*good)
    assert all(isinstance(token, str) and token.startswith("h") for token in holder)
    for at, bad, error, message in [
        (3, bytes(23), ValueError, "12 bytes per field"),
        (0, "é".encode(), ValueError, "ASCII"),
        (0, bytearray(b"h"), TypeError, "must be bytes"),
        (3, memoryview(bytes(24)), TypeError, "must be bytes"),
        (2, b".\xff.", ValueError, "ASCII"),
        (4, [b"1"], ValueError, "differ in length"),
        (4, (b"1", b"2"), TypeError, "must be lists"),
        (4, [b"1", "2"], TypeError, "plaintexts bytes"),
        (5, [(holder, 0, "a"), (holder, 1)], TypeError, "tuples"),
        (6, {"a": b'"a"}}', "b": "text"}, TypeError, "closing must be bytes"),
    ]:
        args = list(good)
        args[at] = bad
        with pytest.raises(error, match=message):
            seal_into(*args)
    with pytest.raises(TypeError):
        seal_into(*good[:7])
    # A container that refuses the value: the error comes back as it is.
    with pytest.raises(TypeError):
        seal_into(*good[:5], [((), 0, "a"), ((), 1, "b")], closings, closing)

    # A missing path asks Python's function; what it raises comes back.
    def refusing(path: str) -> bytes:
        raise KeyError(path)

    with pytest.raises(KeyError):
        seal_into(*good[:6], {}, refusing)

    # The callback changes the lists under the loop: refused, not read out of bounds.
    def shrinking(path: str) -> bytes:
        located.clear()
        return b'"x"}}'

    with pytest.raises(RuntimeError, match="changed while sealing"):
        seal_into(*good[:6], {}, shrinking)
    unkeyed = _fastseal.Sealer.__new__(_fastseal.Sealer)
    with pytest.raises(RuntimeError, match="not given a key"):
        unkeyed.seal_into(*good)  # type: ignore[arg-type]


def test_plaintexts_in_c_are_the_python_loops() -> None:
    """_fastseal.plaintexts gives the JSON, the JWE growth and the total the Python loop gives:
    paths with non-ASCII characters (counted in characters), every value type, big values."""
    from services.encryptsvc import envelope

    event: dict[str, Any] = {
        "a": "x",
        "é": {"nested": [1, 2.5, None, True, "ü" * 7]},
        "n": 12345678901234567890,
        "big": "z" * 70_000,
        "list": ["p", {"q": []}],
    }
    holder = event["list"]
    located: list[Located] = [
        (event, "a", "traits.a"),
        (event, "é", 'traits["é"]'),
        (event, "n", "traits.n"),
        (event, "big", "traits.big"),
        (holder, 0, "traits.list[0]"),
        (holder, 1, "traits.list[1]"),
    ]
    native = _fastseal.plaintexts(located, orjson.dumps)
    python = envelope._python_plaintexts(located)
    assert native == python
    assert native[0][0] == b'"x"'
    assert _fastseal.plaintexts([], orjson.dumps) == ([], 0, 0)


def test_plaintexts_in_c_refuse_what_they_cannot_read() -> None:
    holder: list[Any] = ["v"]
    with pytest.raises(TypeError, match="tuples"):
        _fastseal.plaintexts([(holder, 0)], orjson.dumps)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="tuples"):
        _fastseal.plaintexts([(holder, 0, 7)], orjson.dumps)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be a list"):
        _fastseal.plaintexts(((holder, 0, "p"),), orjson.dumps)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must return bytes"):
        _fastseal.plaintexts([(holder, 0, "p")], str)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        _fastseal.plaintexts([(holder, 5, "p")], orjson.dumps)
    with pytest.raises(TypeError):
        _fastseal.plaintexts([(holder, 0, "p")], orjson.dumps, 1)  # type: ignore[call-arg]
    located: list[Located] = [(holder, 0, "p"), (holder, 0, "q")]

    def shrinking(value: Any) -> bytes:
        located.clear()
        return b'"v"'

    with pytest.raises(RuntimeError, match="changed while reading"):
        _fastseal.plaintexts(located, shrinking)
