"""The detectors' one-pass prefilter (an RE2 set of all their patterns) never changes an answer."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from phiseal_dev import corpus
from services.policysvc.detectors import DETECTORS, MAX_SCANNED, detect

DATA = Path(__file__).parent.parent / "data"


def every_detector(text: str) -> frozenset[str]:
    """What running every detector's own test on the value answers (no prefilter)."""
    return frozenset(d.detector_id for d in DETECTORS if d.test(text[:MAX_SCANNED]))


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def texts() -> list[str]:
    found = [
        str(row.value) for path in DATA.glob("classification_*.tsv") for row in corpus.load(path)
    ]
    for line in (DATA / "sample_events.jsonl").read_text().splitlines():
        found += strings(orjson.loads(line))
    # Fragments of every kind glued to noise, so candidates and look-alikes meet in one value.
    rng = random.Random(15)
    pieces = [
        "4111 1111 1111 1111",
        "219-09-9999",
        "219 09-9999",
        "1234567893",
        "203.0.113.9",
        "fe80::1",
        "00:1A:2B:3C:4D:5E",
        "02139-4307",
        "E11.9",
        "I10",
        "0777-3105-02",
        "MRN: 004512",
        "mrn#1234",
        "+14155550148",
        "+44 20 7946 0958",
        "(617) 555-0148",
        "1965-02-11",
        "2/29/2024",
        "2026-02-30",
        "zoë@example.com",
        "a@b",
        "999-99-9999",
        "12345",
        "x",
        " ",
        "-",
        ".",
        "@",
        ":",
        "/",
    ]
    for _ in range(3000):
        found.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))))
    return found


def test_the_prefilter_answers_what_every_detector_answers() -> None:
    """For corpus values, sample-event strings and thousands of glued fragments, detect() finds
    exactly the detectors whose own tests match (the set only skips detectors that cannot)."""
    differ = [t for t in texts() if detect([t])[0] != every_detector(t)]
    assert differ == []


def test_only_email_runs_without_the_prefilter() -> None:
    """Email's Unicode classes alone pass the set's memory budget: it always runs, behind its
    own cheap "@" check; every other detector is a candidate only when the set finds it."""
    assert {d.detector_id for d in DETECTORS if not d.patterns} == {"email"}
