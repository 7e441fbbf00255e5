"""Shape drift: where an event's value has another type than a named path needs, that value is
encrypted whole (docs/format.md, "Shape drift") — and, for any event and any policy, nothing
at or below the deepest existing prefix of a named path leaves in plaintext (the property test)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from phiseal_decrypt import Decryptor, Keyring, looks_like_jwe
from services.common.errors import InvalidArgument
from services.common.fieldpath import parse_selection
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc.encryption import Encryptor, Limits, Policy
from tests.encryptsvc.keys import x25519_key
from tests.encryptsvc.test_encryption import FixedSource

KEY = x25519_key()


def _encryptor(fields: tuple[str, ...]) -> Encryptor:
    return Encryptor(
        FixedSource(Policy("dest_1", 1, True, EncryptionFormat.JWE, fields), KEY), Limits()
    )


def _decryptor() -> Decryptor:
    ring = Keyring()
    ring.add(KEY.private)
    return Decryptor(ring)


async def _seal(fields: tuple[str, ...], event: dict[str, Any]) -> tuple[dict[str, Any], int]:
    result = await _encryptor(fields).encrypt("dest_1", [orjson.dumps(event)])
    (outcome,) = result.outcomes
    assert outcome.error is None, outcome.error
    assert outcome.event is not None
    return orjson.loads(outcome.event), outcome.encrypted_fields


# (policy path, event, where a value is taken whole)
DRIFTS = [
    ("properties.allergy[*]", {"properties": {"allergy": "penicillin"}}, ["properties", "allergy"]),
    (
        "properties.allergy[*]",
        {"properties": {"allergy": {"a": "latex"}}},
        ["properties", "allergy"],
    ),
    ("properties.allergy[0]", {"properties": {"allergy": 7}}, ["properties", "allergy"]),
    ("traits.address.zip", {"traits": {"address": "1 Main St, 02100"}}, ["traits", "address"]),
    ("traits.address.zip", {"traits": {"address": ["02100"]}}, ["traits", "address"]),
    ("traits.email", {"traits": "a@b.c"}, ["traits"]),
    ("context.traits.email", {"context": {"traits": None}}, ["context", "traits"]),
    (
        "properties.items[*].sku",
        {"properties": {"items": [{"sku": 1}, "x-17"]}},
        ["properties", "items", 1],
    ),
    ("properties.m[*][*]", {"properties": {"m": [["a"], "b"]}}, ["properties", "m", 1]),
]


@pytest.mark.parametrize(("path", "event", "at"), DRIFTS)
async def test_a_value_of_another_type_is_encrypted_whole(
    path: str, event: dict[str, Any], at: list[str | int]
) -> None:
    """The issue's case and its kin: the value where the path is cut leaves as one JWE."""
    event = {"messageId": "m-1", **event}
    sealed, count = await _seal((path,), event)
    assert count >= 1
    node: Any = sealed
    for key in at:
        node = node[key]
    assert isinstance(node, str)
    assert looks_like_jwe(node)
    assert "penicillin" not in orjson.dumps(sealed).decode()
    assert _decryptor().decrypt_event(sealed) == event


async def test_issue_example_is_not_sent_in_plaintext() -> None:
    """{"allergy": "penicillin"} under properties.allergy[*]: one encrypted field, no plaintext."""
    sealed, count = await _seal(
        ("properties.allergy[*]",), {"messageId": "m", "properties": {"allergy": "penicillin"}}
    )
    assert count == 1
    assert looks_like_jwe(sealed["properties"]["allergy"])


async def test_paths_wanting_keys_and_indices_take_the_value_whole() -> None:
    """properties.a.b and properties.a[*]: whatever type a has, one path is cut, so a is whole."""
    for value in ({"b": 1, "c": 2}, [1, 2], "s"):
        event = {"messageId": "m", "properties": {"a": value}}
        sealed, count = await _seal(("properties.a.b", "properties.a[*]"), event)
        assert count == 1
        assert looks_like_jwe(sealed["properties"]["a"])


async def test_missing_keys_name_nothing() -> None:
    """A path whose key is simply absent is not drift: nothing is encrypted, nothing refused."""
    event = {"messageId": "m", "traits": {"name": "Ann"}, "properties": {"items": [{}, {"q": 1}]}}
    sealed, count = await _seal(("traits.email", "properties.items[*].sku"), event)
    assert (count, sealed) == (0, event)


# --- the property ---------------------------------------------------------------------------

KEYS = ["a", "b", "c", "0", "first name"]
SEGMENT = st.one_of(
    st.sampled_from(KEYS).map(lambda k: f'["{k}"]' if " " in k else f".{k}"),
    st.just("[*]"),
    st.integers(0, 2).map(lambda i: f"[{i}]"),
)
PATH = st.builds(
    lambda root, segs: root + "".join(segs),
    st.sampled_from(["context", "traits", "properties"]),
    st.lists(SEGMENT, min_size=1, max_size=4).filter(lambda s: not s[0].startswith("[")),
)
# Events with NUL are refused whole (hostile_json): not what this property is about.
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=4)
SCALAR = st.none() | st.booleans() | st.integers(-3, 3) | TEXT
VALUE = st.recursive(
    SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=12,
)
EVENT = st.fixed_dictionaries(
    {"messageId": st.just("m-1")},
    optional={root: VALUE for root in ("context", "traits", "properties")},
)


def _segments(text: str) -> list[str | int | None]:
    """A path as key / index / None ([*]) segments (the test's own reading, not fieldpath's)."""
    (parsed,) = parse_selection([text])
    return [
        None if repr(seg) == "[*]" else seg  # type: ignore[misc]
        for seg in parsed.segments
    ]


def _deepest(
    node: Any, segs: list[str | int | None], at: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """Every concrete place a path reaches: its end, or the deepest prefix whose value's type
    stops it. A missing key or index reaches nothing."""
    if not segs:
        return [at]
    seg, rest = segs[0], segs[1:]
    if isinstance(seg, str):
        if not isinstance(node, dict):
            return [at] if at else []
        return _deepest(node[seg], rest, (*at, seg)) if seg in node else []
    if not isinstance(node, list):
        return [at]
    indices = range(len(node)) if seg is None else [seg] if seg < len(node) else []
    return [p for i in indices for p in _deepest(node[i], rest, (*at, i))]


def _is_named(place: tuple[Any, ...], paths: list[list[str | int | None]]) -> bool:
    """Whether ``place`` is a prefix (or the whole) of some path's expansion."""
    return any(
        len(place) <= len(p)
        and all(
            (s is None and isinstance(c, int)) or s == c for s, c in zip(p, place, strict=False)
        )
        for p in paths
    )


def _jwe_places(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, str):
        return [at] if looks_like_jwe(node) else []
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _jwe_places(v, (*at, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _jwe_places(v, (*at, i))]
    return []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(event=EVENT, paths=st.lists(PATH, min_size=1, max_size=4, unique=True))
async def test_nothing_at_or_below_a_named_prefix_leaves_in_plaintext(
    event: dict[str, Any], paths: list[str]
) -> None:
    """For any event and any policy: at every deepest existing prefix of every named path the
    output holds a JWE (there or at a named place above it); every JWE sits at a named place;
    and decrypting gives back the event exactly."""
    try:
        parse_selection(paths)
    except InvalidArgument:
        assume(False)  # overlapping paths: policysvc refuses such a policy
    segs = [_segments(p) for p in paths]
    sealed, _ = await _seal(tuple(paths), event)
    for path in segs:
        for place in _deepest(event, path):
            node: Any = sealed
            covered = False
            for step in place:
                if isinstance(node, str):
                    break
                node = node[step]
            covered = isinstance(node, str) and looks_like_jwe(node)
            assert covered, f"plaintext at {place} for {path}"
    for place in _jwe_places(sealed):
        assert _is_named(place, segs), place
    assert _decryptor().decrypt_event(sealed) == event
