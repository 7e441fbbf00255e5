"""PII classification: default and custom matchers, overrides, and the precedence between them.

A field path classifies as the first of these that applies:

1. an override set for exactly that path (``SetClassification``);
2. a custom matcher of the workspace: on KEY it looks at the path's innermost key; on VALUE it
   applies when any value ever sampled at that path matched it (the samples' values are never
   stored — only the fact "path P matched matcher M" is);
3. a default matcher (``data/default_pii_matchers.tsv``) whose name equals the innermost key
   after normalisation (lower case; spaces, "_" and "-" dropped);
4. otherwise green.

When several custom (or default) matchers apply, the most restrictive wins (red, then yellow,
then green), and among equals the oldest.
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


def normalize_key(key: str) -> str:
    """The form key matchers compare: lower case without spaces, "_" or "-"."""
    return "".join(ch for ch in key.lower() if ch not in " _-")


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


def load_default_matchers() -> list[Matcher]:
    """The default matchers shipped as package data, in file order."""
    text = resources.files("services.policysvc.data").joinpath("default_pii_matchers.tsv")
    rows = csv.DictReader(io.StringIO(text.read_text(encoding="utf-8")), delimiter="\t")
    return [
        Matcher(
            matcher_id=f"default:{row['name']}",
            name=row["name"],
            target=MatcherTarget.KEY,
            kind=MatchKind.EXACT,
            pattern=row["name"],
            classification=Classification(row["classification"]),
            is_default=True,
        )
        for row in rows
    ]


DEFAULT_MATCHERS: Sequence[Matcher] = tuple(load_default_matchers())


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
    if kind is None:
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


@dataclass
class Classifier:
    """A workspace's classification state; classifies paths without touching storage."""

    custom: Sequence[CompiledMatcher]
    overrides: Mapping[str, Override] = field(default_factory=dict)
    # path -> ids of custom VALUE matchers that matched a value sampled at that path
    value_hits: Mapping[str, frozenset[str]] = field(default_factory=dict)
    defaults: Sequence[CompiledMatcher] = field(
        default_factory=lambda: [CompiledMatcher.of(m) for m in DEFAULT_MATCHERS]
    )

    @classmethod
    def of(
        cls,
        custom: Sequence[Matcher],
        overrides: Iterable[Override] = (),
        value_hits: Mapping[str, frozenset[str]] | None = None,
    ) -> Classifier:
        return cls(
            custom=[CompiledMatcher.of(m) for m in custom],
            overrides={o.path: o for o in overrides},
            value_hits=dict(value_hits or {}),
        )

    def value_matches(self, path: str, values: Iterable[Any]) -> frozenset[str]:
        """Ids of this workspace's VALUE matchers that match any of ``values`` at ``path``."""
        value_matchers = [c for c in self.custom if c.matcher.target is MatcherTarget.VALUE]
        hits: set[str] = set()
        for value in values:
            for candidate in value_matchers:
                if candidate.matcher.matcher_id not in hits and candidate.matches_value(value):
                    hits.add(candidate.matcher.matcher_id)
        return frozenset(hits)

    def classify(
        self, path: FieldPath, extra_value_hits: frozenset[str] = frozenset()
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
            )
        default = _winner(c for c in self.defaults if c.matches_key(key))
        if default is not None:
            return FieldClassification(
                text,
                default.classification,
                DecisionSource.DEFAULT_MATCHER,
                default.matcher_id,
                f"default matcher {default.name!r}",
            )
        return FieldClassification(
            text, Classification.GREEN, DecisionSource.NONE, "", "no matcher matched"
        )
