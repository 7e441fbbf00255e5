"""Field paths: parsing, canonical spelling, overlap checks and the walker."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.fieldpath import find, leaf_paths, parse, parse_selection

EVENT = {
    "traits": {"email": "a@b.c", "address": {"zipcode": "02100"}, "first name": "Jane"},
    "properties": {"allergy": ["penicillin", "latex"], "items": [{"sku": 1}, {"sku": 2}, {}]},
    "context": {"traits": {"phone": "+1555"}},
}


@pytest.mark.parametrize(
    "text",
    [
        "traits.email",
        "context.traits.phone",
        "traits.address.zipcode",
        "properties.allergy[*]",
        "properties.items[*].sku",
        "properties.items[0]",
        'traits["first name"]',
    ],
)
def test_canonical_paths_round_trip(text: str) -> None:
    """A canonical path parses and prints back unchanged."""
    assert str(parse(text)) == text


def test_quoted_simple_key_is_canonicalised() -> None:
    """["email"] and .email are the same path."""
    assert str(parse('traits["email"]')) == "traits.email"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("userId", "outside the encryptable objects"),
        ("integrations.x", "outside the encryptable objects"),
        ("traits", "names a whole object"),
        ("traits..email", 'expected a key after "."'),
        ("traits.email.", 'expected a key after "."'),
        ("traits[email]", "unexpected"),
        ('traits["open', "unterminated"),
        ("traits." + ".".join(["a"] * 40), "deeper than"),
    ],
)
def test_malformed_paths_are_invalid_arguments(text: str, says: str) -> None:
    """Each malformed path raises InvalidArgument saying what is wrong."""
    with pytest.raises(InvalidArgument, match=says):
        parse(text)


def test_overlapping_selection_is_refused() -> None:
    """A path inside another selected path is refused, naming both."""
    with pytest.raises(InvalidArgument, match=r"traits\.address already contains"):
        parse_selection(["traits.address", "traits.address.zipcode"])


def test_selection_is_sorted_and_deduplicated() -> None:
    """Duplicates and spellings of the same path collapse to one canonical entry."""
    paths = parse_selection(["traits.email", 'traits["email"]', "context.traits.phone"])
    assert [str(p) for p in paths] == ["context.traits.phone", "traits.email"]


def test_find_resolves_arrays_and_skips_missing() -> None:
    """[*] visits every element; absent keys are skipped, not errors."""
    found = [loc.concrete for loc in find(EVENT, parse("properties.items[*].sku"))]
    assert found == ["properties.items[0].sku", "properties.items[1].sku"]
    assert list(find(EVENT, parse("traits.missing.deep"))) == []


def test_find_points_at_the_container() -> None:
    """A location's container and key address the value in place."""
    (loc,) = find(EVENT, parse('traits["first name"]'))
    assert (loc.container[loc.key], loc.concrete) == ("Jane", 'traits["first name"]')  # type: ignore[index]


def test_leaf_paths_list_every_key_once() -> None:
    """Listing paths of an event gives every key path under the three roots, once."""
    assert leaf_paths(EVENT) == [
        "context.traits",
        "context.traits.phone",
        "properties.allergy",
        "properties.items",
        "properties.items[*].sku",
        "traits.address",
        "traits.address.zipcode",
        "traits.email",
        'traits["first name"]',
    ]
