"""policysvc's CPU-heavy steps as pure functions of plain values, so Offload can run them in a
worker process: parsing and walking sample events, matching values (the workspace's value
matchers and the built-in detectors), classifying paths.

Each has a cost estimate (microseconds, on the generous side) that decides whether it is worth
the trip to the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.common.fieldpath import parse, parse_selection, values_by_path
from services.common.limits import Limits
from services.common.selection import build_selection
from services.policysvc import caps
from services.policysvc.classification import (
    Classification,
    Classifier,
    FieldClassification,
    Matcher,
    MatcherTarget,
    Override,
    Signals,
)
from services.policysvc.detectors import DETECTORS, MAX_ELEMENTS, detect


@dataclass(frozen=True)
class ClassifierState:
    """A workspace's stored classification inputs."""

    matchers: Sequence[Matcher]
    overrides: Sequence[Override]
    value_hits: Mapping[str, frozenset[str]]
    # path -> what the built-in detectors saw in values sampled there (never the values)
    signals: Mapping[str, Signals] = field(default_factory=dict)

    def classifier(self) -> Classifier:
        return Classifier.of(self.matchers, self.overrides, self.value_hits, self.signals)


# A sample is one analytics event: the same parser and ceilings as encryptsvc's events (size,
# nesting), so a hostile sample cannot exhaust memory or the stack of the path walkers.
SAMPLE_LIMITS = Limits()


def parse_event(text: str, what: str) -> dict[str, Any] | str:
    """The event, or why it is not one (a message safe to return: it quotes nothing)."""
    try:
        # surrogatepass: a lone surrogate reaches the parser, which refuses it by name.
        return SAMPLE_LIMITS.parse_event(text.encode("utf-8", "surrogatepass"), what=what)
    except InvalidArgument as exc:
        return exc.message


@dataclass(frozen=True)
class SampleAnalysis:
    """What sample events showed: their paths, which value matchers hit at each, what the
    built-in detectors saw at each, and the end users they concern (for the audit record)."""

    paths: list[str]
    hits: dict[str, frozenset[str]]
    signals: dict[str, Signals] = field(default_factory=dict)
    end_users: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EventPreview:
    index: int
    encrypted_paths: list[str]
    missing_paths: list[str]
    error: str = ""


def value_matchers(state: ClassifierState) -> int:
    return sum(1 for m in state.matchers if m.target is MatcherTarget.VALUE)


# What the built-in detectors cost per character, in custom value matchers: all of them on one
# string value took about as long as eight RE2 value matchers (measured with short values)
# before one RE2 set pass chose which to run (31 -> 5.5 us per sample string); the estimate is
# kept, as overestimating only sends more work to the worker, never more to the loop.
DETECTORS_PER_CHAR = 8.0


def sample_cost(samples: Sequence[str], state: ClassifierState) -> float:
    # Parsing and walking ~0.2 us a character; a value every ~10 characters, ~9 us per RE2 call.
    return sum(len(s) for s in samples) * (0.2 + value_matchers(state) + DETECTORS_PER_CHAR)


def classify_cost(paths: int, state: ClassifierState) -> float:
    # The key rules read each key as words: ~60 us a path, plus the custom matchers.
    return paths * (60 + 10 * len(state.matchers))


def parse_cost(paths: Sequence[str]) -> float:
    return sum(len(p) for p in paths) * 1.0


def sampled_values(events: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Each key path of the events and the values found at it: one walk per event."""
    values: dict[str, list[Any]] = {}
    for event in events:
        values_by_path(event, values)
    return values


def parse_samples(samples: Sequence[str], what: str = "sample_events") -> list[dict[str, Any]]:
    """Parses JSON events; the error names the index, never the content."""
    events = []
    for index, text in enumerate(samples):
        event = parse_event(text, f"{what}[{index}]")
        if isinstance(event, str):
            raise InvalidArgument(event)
        events.append(event)
    return events


def value_checks(values: Mapping[str, list[Any]], value_matchers: int) -> int:
    """How many value tests matching ``values`` costs: each scalar against each custom value
    matcher, each string (arrays' elements too, as far as detectors look) against each
    built-in detector. One pass, before any test runs."""
    scalars = strings = 0
    for found in values.values():
        for value in found:
            if isinstance(value, list):
                strings += sum(1 for v in value[:MAX_ELEMENTS] if isinstance(v, str))
            elif not isinstance(value, dict):
                # Objects and arrays are walked, not matched: their leaves are values of their own.
                scalars += 1
                strings += isinstance(value, str)
    return scalars * value_matchers + strings * len(DETECTORS)


def analyse_samples(samples: Sequence[str], state: ClassifierState) -> SampleAnalysis:
    """Parses ``samples`` (each must be an event), matches their values and runs the detectors
    over them: one walk per event, then linear in the values times the matchers, within
    caps.check_sampled."""
    events = parse_samples(samples)
    values = sampled_values(events)
    caps.check_sampled(len(values), value_checks(values, value_matchers(state)))
    classifier = state.classifier()
    hits: dict[str, frozenset[str]] = {}
    signals: dict[str, Signals] = {}
    for path, found in values.items():
        if matched := classifier.value_matches(path, found):
            hits[path] = matched
        signal = Signals(*detect(found))
        if signal.detections or signal.kinds:
            signals[path] = signal
    return SampleAnalysis(sorted(values), hits, signals, end_users(events))


# An end-user id longer than this is not one a source sends; it is left out of audit records.
MAX_END_USER_ID = 200


def end_users(events: Iterable[dict[str, Any]]) -> list[str]:
    """The distinct end users the events concern (userId, else anonymousId), sorted."""
    found: set[str] = set()
    for event in events:
        for name in ("userId", "anonymousId"):
            value = event.get(name)
            if isinstance(value, str | int) and not isinstance(value, bool):
                text = str(value)
                if text and len(text) <= MAX_END_USER_ID and text.isprintable():
                    found.add(text)
                    break
    return sorted(found)


def canonical_paths(texts: Sequence[str], what: str) -> list[str]:
    """Each path's canonical spelling (InvalidArgument names the bad one)."""
    return [str(parse(text, f"{what}[{i}]")) for i, text in enumerate(texts)]


def canonical_selection(texts: Sequence[str], what: str) -> list[str]:
    """parse_selection's canonical, sorted, overlap-free spellings."""
    return [str(p) for p in parse_selection(texts, what)]


def classify_paths(
    state: ClassifierState, paths: Sequence[str], sampled: SampleAnalysis | None = None
) -> list[FieldClassification]:
    """The classification of each (canonical) path, with what ``sampled`` just showed."""
    classifier = state.classifier()
    if sampled is None:
        return [classifier.classify(parse(p)) for p in paths]
    return [
        classifier.classify(parse(p), sampled.hits.get(p, frozenset()), sampled.signals.get(p))
        for p in paths
    ]


def classification_problems(state: ClassifierState, paths: Sequence[str]) -> list[str]:
    """One sentence per path that is not yellow, saying what decided it and how to fix it."""
    problems = []
    for decision in classify_paths(state, paths):
        if decision.classification is not Classification.YELLOW:
            problems.append(
                f"{decision.path} is {decision.classification.value} ({decision.decided_by}); "
                "only yellow fields can be encrypted: if it is sensitive, reclassify it with "
                f"SetClassification override {{path: {decision.path}, classification: "
                "CLASSIFICATION_YELLOW}"
            )
    return problems


@dataclass(frozen=True)
class SamplePreview:
    """preview_samples' answer, and what its audit record needs (never a value)."""

    previews: list[EventPreview]
    end_users: list[str]
    malformed: int


def preview_samples(samples: Sequence[str], paths: Sequence[str]) -> SamplePreview:
    """Which places of each sample the (canonical, overlap-free) paths name: one walk each."""
    selection = build_selection(parse_selection(paths))
    previews = []
    events = []
    for index, text in enumerate(samples):
        event = parse_event(text, f"sample_events[{index}]")
        if isinstance(event, str):
            previews.append(EventPreview(index, [], [], error=event))
            continue
        events.append(event)
        located = selection.locate_paths(event)
        seen = {id(path) for path, _ in located}
        missing = [str(path) for path in selection.paths if id(path) not in seen]
        previews.append(EventPreview(index, sorted({c for _, c in located}), missing))
    return SamplePreview(previews, end_users(events), len(samples) - len(events))
