"""PII classification: default and custom matchers, overrides, and the precedence between them.

A field path classifies as the first of these that applies:

1. an override set for exactly that path (``SetClassification``);
2. a custom matcher of the workspace: on KEY it looks at the path's innermost key; on VALUE it
   applies when any value ever sampled at that path matched it (the samples' values are never
   stored — only the fact "path P matched matcher M" is);
3. the default matchers (``data/default_pii_matchers.tsv``): key matchers read the key as
   words (``key_rules``) and value detectors look at sampled values (``detectors``); the more
   restrictive of the two decides, the key on a tie;
4. otherwise green.

When several custom (or default) matchers apply, the most restrictive wins (red, then yellow,
then green), and among equals the oldest. Every decision says which matcher decided and on
what (key or value), so a person can correct it with an override or a custom matcher.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from importlib import resources
from typing import Any

import re2

from services.common.errors import InvalidArgument
from services.common.fieldpath import FieldPath
from services.common.hostile_json import fragment_text
from services.policysvc.detectors import BY_ID, DETECTORS
from services.policysvc.key_rules import KeyRules, Rule, concepts_from_rows
from services.policysvc.keywords import normalize_key

MAX_CUSTOM_MATCHERS = 100
MAX_PATTERN = 1000
# RE2 refuses a pattern whose compiled program would need more memory than this.
REGEX_MEMORY_BUDGET = 1 << 20
# Value matchers look at no more than this many characters of one value.
MAX_MATCHED_VALUE = 64 * 1024


class Classification(StrEnum):
    RED = "red"
    YELLOW = "yellow"
    GREEN = "green"


# Lower ranks are more restrictive and win when several matchers apply.
_RANK = {Classification.RED: 0, Classification.YELLOW: 1, Classification.GREEN: 2}


class MatcherTarget(StrEnum):
    KEY = "key"
    VALUE = "value"


class MatchKind(StrEnum):
    EXACT = "exact"
    REGEX = "regex"
    # A default matcher: key words against its phrases, or a value detector.
    BUILTIN = "builtin"


class DecisionSource(StrEnum):
    DEFAULT_MATCHER = "default_matcher"
    CUSTOM_MATCHER = "custom_matcher"
    OVERRIDE = "override"
    NONE = "none"


@dataclass(frozen=True)
class Matcher:
    matcher_id: str
    name: str
    target: MatcherTarget
    kind: MatchKind
    pattern: str
    classification: Classification
    is_default: bool = False
    created_at: datetime | None = None
    created_by: str = ""


@dataclass(frozen=True)
class Override:
    path: str
    classification: Classification
    set_by: str
    set_at: datetime


@dataclass(frozen=True)
class FieldClassification:
    path: str
    classification: Classification
    source: DecisionSource
    matcher_id: str
    decided_by: str
    # What the deciding matcher looked at; None for overrides and for nothing matched.
    decided_on: MatcherTarget | None = None


@dataclass(frozen=True)
class Signals:
    """What samples showed at one path, without the values: detector ids and JSON kinds."""

    detections: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()

    def __or__(self, other: Signals) -> Signals:
        return Signals(self.detections | other.detections, self.kinds | other.kinds)

    def encode(self) -> list[str]:
        """The stored form: "value:<detector>" and "kind:<json kind>" strings."""
        return sorted([f"value:{d}" for d in self.detections] + [f"kind:{k}" for k in self.kinds])

    @classmethod
    def decode(cls, stored: Iterable[str]) -> Signals:
        detections = {s[6:] for s in stored if s.startswith("value:") and s[6:] in BY_ID}
        kinds = {s[5:] for s in stored if s.startswith("kind:")}
        return cls(frozenset(detections), frozenset(kinds))


def compile_pattern(pattern: str) -> re2._Regexp[str]:
    """Compiles an RE2 pattern within the memory budget; InvalidArgument says why it cannot."""
    options = re2.Options()
    options.max_mem = REGEX_MEMORY_BUDGET
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b""
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        # RE2 quotes the offending part of the pattern after a colon ("missing ): (\d{3}-45");
        # a value matcher's pattern can be an exact PHI value, so only the reason is kept.
        text = text.split(":", 1)[0].strip() or "invalid pattern"
        raise InvalidArgument(
            f"pattern is not a usable RE2 regular expression ({text}); RE2 has no "
            "backreferences or lookaround, and a pattern must compile within "
            f"{REGEX_MEMORY_BUDGET // 1024} KiB"
        ) from None


def _default_rows() -> list[dict[str, str]]:
    text = resources.files("services.policysvc.data").joinpath("default_pii_matchers.tsv")
    return list(csv.DictReader(io.StringIO(text.read_text(encoding="utf-8")), delimiter="\t"))


def load_default_matchers() -> list[Matcher]:
    """The default matchers shipped as package data: key matchers in file order, then the
    value detectors."""
    keys = [
        Matcher(
            matcher_id=f"default:{row['name']}",
            name=row["name"],
            target=MatcherTarget.KEY,
            kind=MatchKind.BUILTIN,
            pattern=f"{row['rule']}: {row['phrases']}",
            classification=Classification(row["classification"]),
            is_default=True,
        )
        for row in _default_rows()
    ]
    values = [
        Matcher(
            matcher_id=f"default:value:{d.detector_id}",
            name=d.name,
            target=MatcherTarget.VALUE,
            kind=MatchKind.BUILTIN,
            pattern=d.description + ("" if d.strong else " (supporting evidence only)"),
            classification=Classification.RED if d.restricted else Classification.YELLOW,
            is_default=True,
        )
        for d in DETECTORS
    ]
    return keys + values


DEFAULT_MATCHERS: Sequence[Matcher] = tuple(load_default_matchers())
KEY_RULES = KeyRules(concepts_from_rows(_default_rows()))
_DEFAULT_BY_NAME = {m.name: m for m in DEFAULT_MATCHERS if m.target is MatcherTarget.KEY}


def value_text(value: Any) -> str | None:
    """The text a value matcher sees: strings as they are, numbers and booleans as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value[:MAX_MATCHED_VALUE]
    if isinstance(value, int | float):
        return repr(value)
    if (number := fragment_text(value)) is not None:
        return number  # a number kept exactly as the sample wrote it
    return None  # null, objects and arrays: their leaves are matched on their own paths


@dataclass(frozen=True)
class CompiledMatcher:
    """A matcher ready to test keys or values."""

    matcher: Matcher
    regex: re2._Regexp[str] | None = None
    exact_key: str = ""

    @classmethod
    def of(cls, matcher: Matcher) -> CompiledMatcher:
        if matcher.kind is MatchKind.REGEX:
            return cls(matcher, regex=compile_pattern(matcher.pattern))
        return cls(matcher, exact_key=normalize_key(matcher.pattern))

    def matches_key(self, key: str) -> bool:
        if self.matcher.target is not MatcherTarget.KEY:
            return False
        if self.regex is not None:
            return self.regex.search(key) is not None
        return normalize_key(key) == self.exact_key

    def matches_value(self, value: Any) -> bool:
        if self.matcher.target is not MatcherTarget.VALUE:
            return False
        text = value_text(value)
        if text is None:
            return False
        if self.regex is not None:
            return self.regex.search(text) is not None
        return text == self.matcher.pattern


def validate_matcher(
    name: str, target: MatcherTarget | None, kind: MatchKind | None, pattern: str
) -> tuple[str, MatcherTarget, MatchKind, str]:
    """Checks a new custom matcher's fields (the pattern compiles under RE2 for REGEX)."""
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise InvalidArgument("a matcher needs a printable name of at most 200 characters")
    if target is None:
        raise InvalidArgument("a matcher's target must be MATCHER_TARGET_KEY or _VALUE")
    if kind is None or kind is MatchKind.BUILTIN:
        raise InvalidArgument("a matcher's kind must be MATCH_KIND_EXACT or MATCH_KIND_REGEX")
    if not pattern or len(pattern) > MAX_PATTERN:
        raise InvalidArgument(f"a matcher's pattern is required, at most {MAX_PATTERN} characters")
    if kind is MatchKind.REGEX:
        compile_pattern(pattern)
    elif target is MatcherTarget.KEY and not normalize_key(pattern):
        raise InvalidArgument("an exact key pattern needs a character besides spaces, _ and -")
    return name, target, kind, pattern


def _winner(candidates: Iterable[CompiledMatcher]) -> Matcher | None:
    best: Matcher | None = None
    for candidate in candidates:
        if best is None or _RANK[candidate.matcher.classification] < _RANK[best.classification]:
            best = candidate.matcher
    return best


def default_decision(path: FieldPath, signals: Signals) -> FieldClassification:
    """What the default matchers say of ``path``: key words and value detectors."""
    text = str(path)
    keys = [seg for seg in path.segments if isinstance(seg, str)]
    key = keys[-1] if len(keys) > 1 else ""
    # The root counts as a parent: "traits.name" is the person's, "properties.name" need not be.
    parent = keys[-2] if len(keys) > 1 else None
    finding = KEY_RULES.find(key, parent, signals.kinds) if key else None
    by_key: FieldClassification | None = None
    if finding is not None and finding.concept is not None:
        matcher = _DEFAULT_BY_NAME[finding.concept.name]
        by_key = FieldClassification(
            text,
            matcher.classification,
            DecisionSource.DEFAULT_MATCHER,
            matcher.matcher_id,
            f"default matcher {matcher.name!r}: {finding.reason}",
            MatcherTarget.KEY,
        )
    by_value: FieldClassification | None = None
    for detector in DETECTORS:  # most restrictive first: the table lists red detectors first
        if detector.strong and detector.detector_id in signals.detections:
            level = Classification.RED if detector.restricted else Classification.YELLOW
            by_value = FieldClassification(
                text,
                level,
                DecisionSource.DEFAULT_MATCHER,
                f"default:value:{detector.detector_id}",
                f"default value detector {detector.name!r}: a value sampled at this path "
                f"looked like one ({detector.description})",
                MatcherTarget.VALUE,
            )
            break
    # A key that names a specific identifier ("imei", "phone") is believed over a value that
    # merely looks like another one; a fact or free text ("note") may hold anything.
    specific = (
        finding is not None
        and finding.concept is not None
        and finding.concept.rule
        in (
            Rule.HEAD,
            Rule.PERSON,
            Rule.EVENT,
        )
    )
    if by_key is not None and (
        by_value is None
        or specific
        or _RANK[by_key.classification] <= _RANK[by_value.classification]
    ):
        return by_key
    if by_value is not None:
        return by_value
    why = finding.reason if finding is not None else "a root is not a field"
    return FieldClassification(
        text, Classification.GREEN, DecisionSource.NONE, "", f"no matcher matched: {why}"
    )


@dataclass
class Classifier:
    """A workspace's classification state; classifies paths without touching storage."""

    custom: Sequence[CompiledMatcher]
    overrides: Mapping[str, Override] = field(default_factory=dict)
    # path -> ids of custom VALUE matchers that matched a value sampled at that path
    value_hits: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # path -> what the built-in detectors saw in values sampled at that path
    signals: Mapping[str, Signals] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        custom: Sequence[Matcher],
        overrides: Iterable[Override] = (),
        value_hits: Mapping[str, frozenset[str]] | None = None,
        signals: Mapping[str, Signals] | None = None,
    ) -> Classifier:
        return cls(
            custom=[CompiledMatcher.of(m) for m in custom],
            overrides={o.path: o for o in overrides},
            value_hits=dict(value_hits or {}),
            signals=dict(signals or {}),
        )

    def value_matches(self, path: str, values: Iterable[Any]) -> frozenset[str]:
        """Ids of this workspace's VALUE matchers that match any of ``values`` at ``path``."""
        value_matchers = [c for c in self.custom if c.matcher.target is MatcherTarget.VALUE]
        hits: set[str] = set()
        if not value_matchers:
            return frozenset()
        for value in values:
            for candidate in value_matchers:
                if candidate.matcher.matcher_id not in hits and candidate.matches_value(value):
                    hits.add(candidate.matcher.matcher_id)
        return frozenset(hits)

    def classify(
        self,
        path: FieldPath,
        extra_value_hits: frozenset[str] = frozenset(),
        extra_signals: Signals | None = None,
    ) -> FieldClassification:
        """The classification of ``path`` and what decided it (see the module docstring)."""
        text = str(path)
        override = self.overrides.get(text)
        if override is not None:
            return FieldClassification(
                text,
                override.classification,
                DecisionSource.OVERRIDE,
                "",
                f"override by {override.set_by}",
            )
        key = path.last_key or ""
        hits = self.value_hits.get(text, frozenset()) | extra_value_hits
        custom = _winner(
            c for c in self.custom if c.matches_key(key) or c.matcher.matcher_id in hits
        )
        if custom is not None:
            return FieldClassification(
                text,
                custom.classification,
                DecisionSource.CUSTOM_MATCHER,
                custom.matcher_id,
                f"custom matcher {custom.name!r} on {custom.target.value}",
                custom.target,
            )
        signals = self.signals.get(text, Signals())
        if extra_signals is not None:
            signals = signals | extra_signals
        return default_decision(path, signals)
