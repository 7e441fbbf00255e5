"""policysvc's CPU-heavy steps as pure functions of plain values, so Offload can run them in a
worker process: parsing and walking sample events, matching values, classifying paths.

Each has a cost estimate (microseconds, on the generous side) that decides whether it is worth
the trip to the worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
)


@dataclass(frozen=True)
class ClassifierState:
    """A workspace's stored classification inputs."""

    matchers: Sequence[Matcher]
    overrides: Sequence[Override]
    value_hits: Mapping[str, frozenset[str]]

    def classifier(self) -> Classifier:
        return Classifier.of(self.matchers, self.overrides, self.value_hits)


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
    """What sample events showed: their paths, and which value matchers hit at each."""

    paths: list[str]
    hits: dict[str, frozenset[str]]


@dataclass(frozen=True)
class EventPreview:
    index: int
    encrypted_paths: list[str]
    missing_paths: list[str]
    error: str = ""


def value_matchers(state: ClassifierState) -> int:
    return sum(1 for m in state.matchers if m.target is MatcherTarget.VALUE)


def sample_cost(samples: Sequence[str], state: ClassifierState) -> float:
    # Parsing and walking ~0.2 us a character; a value every ~10 characters, ~9 us per RE2 call.
    return sum(len(s) for s in samples) * (0.2 + value_matchers(state))


def classify_cost(paths: int, state: ClassifierState) -> float:
    return paths * (40 + 10 * len(state.matchers))


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


def analyse_samples(samples: Sequence[str], state: ClassifierState) -> SampleAnalysis:
    """Parses ``samples`` (each must be an event) and matches their values: linear in their
    size times the value matchers, within caps.check_sampled."""
    values = sampled_values(parse_samples(samples))
    # Objects and arrays are walked, not matched: their leaves are values of their own.
    count = sum(1 for found in values.values() for v in found if not isinstance(v, dict | list))
    caps.check_sampled(len(values), count, value_matchers(state))
    classifier = state.classifier()
    hits = {path: classifier.value_matches(path, found) for path, found in values.items()}
    return SampleAnalysis(sorted(values), {p: h for p, h in hits.items() if h})


def canonical_paths(texts: Sequence[str], what: str) -> list[str]:
    """Each path's canonical spelling (InvalidArgument names the bad one)."""
    return [str(parse(text, f"{what}[{i}]")) for i, text in enumerate(texts)]


def canonical_selection(texts: Sequence[str], what: str) -> list[str]:
    """parse_selection's canonical, sorted, overlap-free spellings."""
    return [str(p) for p in parse_selection(texts, what)]


def classify_paths(
    state: ClassifierState, paths: Sequence[str], extra_hits: Mapping[str, frozenset[str]]
) -> list[FieldClassification]:
    """The classification of each (canonical) path."""
    classifier = state.classifier()
    return [classifier.classify(parse(p), extra_hits.get(p, frozenset())) for p in paths]


def classification_problems(state: ClassifierState, paths: Sequence[str]) -> list[str]:
    """One sentence per path that is not yellow, saying what decided it and how to fix it."""
    problems = []
    for decision in classify_paths(state, paths, {}):
        if decision.classification is not Classification.YELLOW:
            problems.append(
                f"{decision.path} is {decision.classification.value} ({decision.decided_by}); "
                "only yellow fields can be encrypted: if it is sensitive, reclassify it with "
                f"SetClassification override {{path: {decision.path}, classification: "
                "CLASSIFICATION_YELLOW}"
            )
    return problems


def preview_samples(samples: Sequence[str], paths: Sequence[str]) -> list[EventPreview]:
    """Which places of each sample the (canonical, overlap-free) paths name: one walk each."""
    selection = build_selection(parse_selection(paths))
    previews = []
    for index, text in enumerate(samples):
        event = parse_event(text, f"sample_events[{index}]")
        if isinstance(event, str):
            previews.append(EventPreview(index, [], [], error=event))
            continue
        located = selection.locate_paths(event)
        seen = {id(path) for path, _ in located}
        missing = [str(path) for path in selection.paths if id(path) not in seen]
        previews.append(EventPreview(index, sorted(c for _, c in located), missing))
    return previews
