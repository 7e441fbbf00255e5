"""The compiled selection finds exactly the places fieldpath.sealed_places finds, path by path
(matches and the places where the event's shape cuts a path)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition
from services.common.fieldpath import parse_selection, sealed_places
from services.common.selection import build_selection
from services.encryptsvc.selection import compile_selection
from tests.encryptsvc.stack import EXTRA_FIELDS, FIELDS, SAMPLES

# Quoted keys, indices beside [*] in other arrays, arrays of arrays, a key next to an index.
TRICKY = (
    "context.traits.email",
    "properties.a[*].b",
    "properties.a[*].c[1]",
    "properties.m[*][*]",
    "properties.n[0].x",
    'properties["first name"]',
    'traits["a.b"].c',
    "traits.list[2]",
    "traits.x",
    "traits.y.z",
    "traits.y[*]",
)
KEYS = st.sampled_from(
    ["a", "b", "c", "m", "n", "x", "y", "z", "list", "first name", "a.b", "email", "0"]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=30,
)
EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "traits": st.dictionaries(KEYS, JSON, max_size=5),
        "properties": st.dictionaries(KEYS, JSON, max_size=5),
        "context": st.dictionaries(KEYS | st.just("traits"), JSON, max_size=5),
    },
)


def _by_find(fields: tuple[str, ...], event: dict[str, Any]) -> set[tuple[int, str | int, str]]:
    selection = compile_selection(fields)
    places = {
        (id(loc.container), loc.key, loc.concrete)
        for path in selection.paths
        for loc in sealed_places(event, path)
    }
    # Two paths cut at different depths of one value (properties.a.b and properties.a[*] with
    # a an object): the value taken whole covers the place inside it.
    return {
        p
        for p in places
        if not any(p[2].startswith((q[2] + ".", q[2] + "[")) for q in places if q is not p)
    }


def _by_locate(fields: tuple[str, ...], event: dict[str, Any]) -> set[tuple[int, str | int, str]]:
    located = compile_selection(fields).locate(event)
    assert len(located) == len({concrete for _, _, concrete in located})
    return {(id(container), key, concrete) for container, key, concrete in located}


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_sample_events_locate_as_find_does(index: int) -> None:
    """Every sample event under the benchmark's policy (and its extra fields): same places."""
    fields = (*FIELDS, *EXTRA_FIELDS)
    assert _by_find(fields, SAMPLES[index]) == _by_locate(fields, SAMPLES[index])


@settings(max_examples=300, deadline=None)
@given(event=EVENTS)
def test_random_events_locate_as_find_does(event: dict[str, Any]) -> None:
    """Random nested events under quoted keys, indices and [*]: same places, same spelling."""
    assert _by_find(TRICKY, event) == _by_locate(TRICKY, event)


def _same_walk(fields: tuple[str, ...], event: dict[str, Any]) -> None:
    """The C walk (_fastwalk) gives the Python walk's list: same places, same order, the same
    container objects."""
    paths = parse_selection(fields)
    native = build_selection(paths, native=True).locate(event)
    python = build_selection(paths, native=False).locate(event)
    assert [(id(c), k, p) for c, k, p in native] == [(id(c), k, p) for c, k, p in python]
    assert all(type(k) is type(q) for (_, k, _), (_, q, _) in zip(native, python, strict=True))


def test_the_native_walk_is_built_and_used_by_default() -> None:
    assert compile_selection(tuple(FIELDS))._native is not None


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_sample_events_walk_alike_in_c_and_python(index: int) -> None:
    _same_walk((*FIELDS, *EXTRA_FIELDS), SAMPLES[index])
    _same_walk(TRICKY, SAMPLES[index])


@settings(max_examples=300, deadline=None)
@given(event=EVENTS)
def test_random_events_walk_alike_in_c_and_python(event: dict[str, Any]) -> None:
    _same_walk(TRICKY, event)


def test_wide_tries_over_small_objects_walk_alike() -> None:
    """More trie keys than the object has (the lookup by the event's keys, in trie order), and
    a trie wider than the C walk's stack buffer."""
    wide = tuple(f"traits.k{i}" for i in range(100))
    event = {"traits": {f"k{i}": i for i in (97, 3, 50, 0, 64, 65, 99)}}
    _same_walk(wide, event)
    _same_walk(wide, {"traits": {f"k{i}": i for i in range(100)}})
    _same_walk(("traits.a[*].b", "traits.a[0].c", "traits.l[5]"), {"traits": {"a": [], "l": [1]}})


def test_unusable_policy_fails_the_batch() -> None:
    """A field list that does not parse is FAILED_PRECONDITION, never "encrypt the rest"."""
    with pytest.raises(FailedPrecondition, match="policy is unusable"):
        compile_selection(("traits.email", "nonsense.x"))
