"""The default classifier on labelled corpora, look-alikes, reasons and value detectors."""

from __future__ import annotations

import pytest

from phiseal_dev import corpus
from services.common.fieldpath import parse
from services.policysvc.classification import (
    Classification,
    Classifier,
    DecisionSource,
    MatcherTarget,
    Signals,
)
from services.policysvc.detectors import detect, luhn_ok

OTHER = corpus.CORPUS.parent / "classification_other_vocabulary.tsv"
THIRD = corpus.CORPUS.parent / "classification_third_vocabulary.tsv"


@pytest.mark.parametrize(
    "path", [corpus.CORPUS, OTHER, THIRD], ids=["corpus", "other-vocabulary", "third-vocabulary"]
)
def test_corpus_meets_the_recall_floors(path: object) -> None:
    """Sensitive recall ≥ 0.95, red recall ≥ 0.90 and green kept green ≥ 0.90."""
    result, _ = corpus.score(corpus.load(path))  # type: ignore[arg-type]
    floors = (result.sensitive_recall >= 0.95, result.recall("red") >= 0.90)
    assert (*floors, result.recall("green") >= 0.90) == (True, True, True)


def classify(path: str, value: object = None) -> tuple[str, str]:
    signals = Signals(*detect([value])) if value is not None else None
    decision = Classifier.of([]).classify(parse(path), extra_signals=signals)
    return decision.classification.value, decision.decided_by


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("properties.page_name", "Checkout"),
        ("properties.product_name", "Bottle"),
        ("properties.event_name", "Appointment Booked"),
        ("traits.email_opt_in", True),
        ("traits.has_mailing_address", True),
        ("properties.zip_code_count", 3),
    ],
)
def test_look_alikes_stay_green(path: str, value: object) -> None:
    """The head word and the value's type decide, not a PII word anywhere in the key."""
    assert classify(path, value)[0] == "green"


def test_email_key_with_boolean_values_is_a_flag() -> None:
    """A key naming an identifier whose samples are all booleans is a flag about it."""
    assert classify("traits.email", True)[0] == "green"
    assert classify("traits.email", "a@example.com")[0] == "yellow"


def test_health_fact_stays_yellow_as_a_boolean() -> None:
    """A boolean health fact is still a health fact."""
    assert classify("properties.is_pregnant", True)[0] == "yellow"


def test_key_decision_names_matcher_and_key() -> None:
    """A key decision says which default matcher and which words of the key decided."""
    decision = Classifier.of([]).classify(parse("traits.date_of_birth"))
    assert (decision.matcher_id, decision.decided_on, decision.source) == (
        "default:birthdate",
        MatcherTarget.KEY,
        DecisionSource.DEFAULT_MATCHER,
    )
    assert "'birth date'" in decision.decided_by


def test_value_decision_names_detector_and_never_the_value() -> None:
    """A value decision names the detector; the reason never quotes the sampled value."""
    value = "219-09-9999"
    decision = Classifier.of([]).classify(
        parse("properties.x"), extra_signals=Signals(*detect([value]))
    )
    assert (decision.classification, decision.matcher_id, decision.decided_on) == (
        Classification.RED,
        "default:value:ssn",
        MatcherTarget.VALUE,
    )
    assert value not in decision.decided_by


@pytest.mark.parametrize(
    ("value", "detector"),
    [
        ("4111111111111111", "card"),
        ("219-09-9999", "ssn"),
        ("1234567893", "npi"),
        ("203.0.113.9", "ipv4"),
        ("E11.9", "icd10"),
        ("0777-3105-02", "ndc"),
        ("02139-4307", "zip4"),
        ("call (617) 555-0148", "phone"),
        ("zoë@example.com", "email"),
        ("1965-02-11", "date"),
    ],
)
def test_detectors_find_their_kind(value: str, detector: str) -> None:
    """Each detector recognises its kind of value."""
    assert detector in detect([value])[0]


@pytest.mark.parametrize(
    ("value", "detector"),
    [
        ("4111111111111112", "card"),  # fails Luhn
        ("900-12-3456", "ssn"),  # area 900 is never assigned
        ("1234567890", "npi"),  # fails the NPI check digit
        ("300.1.2.3", "ipv4"),  # not an octet
        ("2026-02-30", "date"),  # no such day
        ("2026-11-28T10:00:00Z", "phone"),
    ],
)
def test_detectors_reject_look_alikes(value: str, detector: str) -> None:
    """Checksums and ranges reject values that only look alike."""
    assert detector not in detect([value])[0]


def test_luhn() -> None:
    """The Luhn check accepts a valid number and rejects a changed digit."""
    assert (luhn_ok("79927398713"), luhn_ok("79927398714")) == (True, False)


def test_weak_detector_never_decides() -> None:
    """A bare date under a silent key explains nothing by itself: green."""
    assert classify("properties.k", "2026-11-20")[0] == "green"


def test_long_glued_key_is_not_segmented() -> None:
    """A very long key is read without segmentation (the work stays linear)."""
    key = "a" * 5000
    assert classify(f"properties.{key[:400]}")[0] == "green"
