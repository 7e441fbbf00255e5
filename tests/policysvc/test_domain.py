"""policysvc domain rules without a server: classification precedence, key form, page tokens."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.data.paging import Page, encode_token
from services.common.errors import InvalidArgument
from services.common.fieldpath import parse
from services.policysvc.classification import (
    Classification,
    Classifier,
    DecisionSource,
    Matcher,
    MatcherTarget,
    MatchKind,
    Override,
)
from services.policysvc.keywords import normalize_key
from services.policysvc.policy import parse_change

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def matcher(
    matcher_id: str,
    pattern: str,
    classification: Classification,
    *,
    target: MatcherTarget = MatcherTarget.KEY,
    kind: MatchKind = MatchKind.EXACT,
) -> Matcher:
    return Matcher(matcher_id, matcher_id, target, kind, pattern, classification)


def test_normalize_key_drops_case_spaces_underscores_dashes() -> None:
    """Social_Security-Number and 'social security number' normalise alike."""
    assert normalize_key("Social_Security-Number") == normalize_key("social security number")


def test_precedence_override_custom_default_none() -> None:
    """Override beats custom beats default beats nothing."""
    classifier = Classifier.of(
        [matcher("mt_1", "email", Classification.RED)],
        [Override("traits.phone", Classification.GREEN, "ana", NOW)],
    )
    decided = {
        path: classifier.classify(parse(path)).source
        for path in ("traits.phone", "traits.email", "traits.city", "traits.plan")
    }
    assert decided == {
        "traits.phone": DecisionSource.OVERRIDE,
        "traits.email": DecisionSource.CUSTOM_MATCHER,
        "traits.city": DecisionSource.DEFAULT_MATCHER,
        "traits.plan": DecisionSource.NONE,
    }


def test_array_paths_classify_by_innermost_key() -> None:
    """properties.allergy[*] is classified by 'allergy'."""
    decision = Classifier.of([]).classify(parse("properties.allergy[*]"))
    assert (decision.classification, decision.matcher_id) == (
        Classification.YELLOW,
        "default:allergy",
    )


def test_value_matcher_applies_through_recorded_hits() -> None:
    """A VALUE matcher decides a path only where a sampled value matched it."""
    ssn = matcher(
        "mt_ssn",
        r"^\d{3}-\d{2}-\d{4}$",
        Classification.RED,
        target=MatcherTarget.VALUE,
        kind=MatchKind.REGEX,
    )
    classifier = Classifier.of([ssn])
    hits = classifier.value_matches("properties.ref", ["x", "123-45-6789"])
    assert (
        classifier.classify(parse("properties.ref"), hits).classification,
        classifier.classify(parse("properties.other")).classification,
    ) == (Classification.RED, Classification.GREEN)


def test_value_matchers_ignore_objects_and_nulls() -> None:
    """Objects, arrays and null are not matched as values (their leaves are)."""
    anything = matcher(
        "mt_any", ".*", Classification.RED, target=MatcherTarget.VALUE, kind=MatchKind.REGEX
    )
    classifier = Classifier.of([anything])
    assert classifier.value_matches("traits.x", [None, {"a": 1}, [1]]) == frozenset()


def test_page_token_round_trips_for_its_scope_only() -> None:
    """A token decodes to its position in its own listing and is refused in another."""
    token = encode_token("destinations:ws_1", 42)
    assert Page.parse(10, token, "destinations:ws_1") == Page(10, 42)
    with pytest.raises(InvalidArgument):
        Page.parse(10, token, "destinations:ws_2")


def test_page_size_zero_means_default_and_over_500_is_refused() -> None:
    """page_size 0 is 50; 501 is INVALID_ARGUMENT."""
    assert Page.parse(0, "", "x").size == 50
    with pytest.raises(InvalidArgument):
        Page.parse(501, "", "x")


def test_unreadable_change_payload_is_none() -> None:
    """A NOTIFY payload that is not ours parses to None (the servicer answers RESYNC)."""
    assert [parse_change(p) for p in ('{"destination_id": "dst_1", "version": 3}', "x", "[]")] == [
        ("dst_1", 3),
        None,
        None,
    ]
