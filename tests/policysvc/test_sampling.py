"""The one-walk sampling and the trie overlap check give what the quadratic originals gave."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.common.fieldpath import find, leaf_paths, parse, parse_selection
from services.policysvc.analysis import sampled_values

KEYS = st.sampled_from(["a", "b", "first name", "a.b", "0", "x" * 200, "é"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=25,
)
EVENTS = st.fixed_dictionaries(
    {}, optional={root: st.dictionaries(KEYS, JSON, max_size=4) for root in ("traits", "context")}
)


def per_leaf(event: dict[str, Any]) -> dict[str, list[Any]]:
    """The original: a path lookup over the whole event for each leaf path, O(N^2)."""
    values: dict[str, list[Any]] = {}
    for text in leaf_paths(event):
        try:
            path = parse(text)
        except InvalidArgument:
            continue
        values.setdefault(str(path), []).extend(
            loc.container[loc.key]  # type: ignore[index]
            for loc in find(event, path)
        )
    return values


def canonical(values: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {path: sorted(repr(v) for v in found) for path, found in values.items()}


@settings(max_examples=300, deadline=None)
@given(event=EVENTS)
def test_one_walk_finds_the_paths_and_values_per_leaf_lookups_found(event: dict[str, Any]) -> None:
    """Same paths, same values at each, for random nested events (long keys included)."""
    assert canonical(sampled_values([event])) == canonical(per_leaf(event))


def test_paths_past_the_depth_and_length_limits_are_skipped_alike() -> None:
    """Nesting past MAX_SEGMENTS and paths past MAX_PATH_LENGTH: skipped by both."""
    deep: Any = 1
    for _ in range(40):
        deep = {"k": [deep]}
    event = {"traits": {"deep": deep, "long": {"y" * 300: {"z" * 300: 1}}}}
    assert canonical(sampled_values([event])) == canonical(per_leaf(event))


SEGMENTS = st.sampled_from([".a", ".b", "[*]", "[0]", "[1]", '["c d"]'])
PATHS = st.lists(
    st.builds(
        lambda root, rest: root + "".join(rest), st.just("traits.x"), st.lists(SEGMENTS, max_size=4)
    ),
    max_size=8,
)


def pairwise(texts: list[str]) -> bool:
    """The original O(P^2) check: does any path cover another?"""
    parsed = {str(p): p for p in map(parse, texts)}
    return any(a is not b and a.covers(b) for a in parsed.values() for b in parsed.values())


@settings(max_examples=500, deadline=None)
@given(texts=PATHS)
def test_the_trie_refuses_exactly_the_overlaps_pairwise_comparison_found(texts: list[str]) -> None:
    """Random lists over keys, [*] and indices: refused by the trie iff some pair overlaps."""
    try:
        parse_selection(texts)
        refused = False
    except InvalidArgument as exc:
        refused = "overlap" in exc.message
    assert refused == pairwise(texts)


def test_overlap_message_names_both_paths() -> None:
    """The refusal names the outer path and the one inside it."""
    with pytest.raises(InvalidArgument, match=r"properties\.items\[\*\] already contains "):
        parse_selection(["properties.items[3].sku", "properties.items[*]"])
