"""Classification as a workspace sees it: listing known paths, overrides and custom matchers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from services.common.audit import AuditEntry, JSONValue
from services.common.data.paging import Page, encode_token
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.common.fieldpath import find, leaf_paths, parse
from services.common.limits import Limits, check_count
from services.common.security.auth import Caller, Role
from services.common.security.authz import require
from services.policysvc.catalog import new_id, require_id
from services.policysvc.classification import (
    DEFAULT_MATCHERS,
    MAX_CUSTOM_MATCHERS,
    Classification,
    Classifier,
    FieldClassification,
    Matcher,
    MatcherTarget,
    MatchKind,
    Override,
    Signals,
    validate_matcher,
)
from services.policysvc.detectors import detect

MAX_SAMPLES = 1000
MAX_EXTRA_PATHS = 1000


@dataclass(frozen=True)
class ClassifierState:
    """A workspace's stored classification inputs."""

    matchers: Sequence[Matcher]
    overrides: Sequence[Override]
    value_hits: Mapping[str, frozenset[str]]
    signals: Mapping[str, Signals] = field(default_factory=dict)

    def classifier(self) -> Classifier:
        return Classifier.of(self.matchers, self.overrides, self.value_hits, self.signals)


@dataclass(frozen=True)
class ClassificationPage:
    fields: list[FieldClassification]
    matchers: list[Matcher]
    next_page_token: str


class PrivacyStore(Protocol):
    async def workspace_exists(self, workspace_id: str) -> bool: ...

    async def classifier_state(self, workspace_id: str) -> ClassifierState: ...

    async def known_paths(self, workspace_id: str) -> set[str]: ...

    async def record_samples(
        self,
        workspace_id: str,
        paths: Iterable[str],
        hits: Mapping[str, frozenset[str]],
        signals: Mapping[str, Signals] | None = None,
        audit: AuditEntry | None = None,
    ) -> None: ...

    async def set_override(
        self,
        workspace_id: str,
        path: str,
        override: Override | None,
        audit: Callable[[Classification | None], AuditEntry],
    ) -> bool: ...

    async def add_matcher(
        self,
        workspace_id: str,
        matcher: Matcher,
        check: Callable[[int], None],
        audit: AuditEntry,
    ) -> bool: ...

    async def remove_matcher(
        self, workspace_id: str, matcher_id: str, audit: Callable[[Matcher], AuditEntry]
    ) -> Matcher | None: ...


def parse_samples(samples: Sequence[str], field: str = "sample_events") -> list[dict[str, Any]]:
    """Parses JSON events; the error names the index, never the content."""
    check_count(len(samples), MAX_SAMPLES, field)
    events = []
    for index, text in enumerate(samples):
        event = parse_event(text, f"{field}[{index}]")
        if isinstance(event, str):
            raise InvalidArgument(event)
        events.append(event)
    return events


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


def sampled_values(events: Iterable[dict[str, Any]]) -> dict[str, list[Any]]:
    """Each leaf path of the events and the values found at it (kept in memory only)."""
    values: dict[str, list[Any]] = {}
    for event in events:
        for text in leaf_paths(event):
            try:
                path = parse(text)
            except InvalidArgument:
                continue  # too long or too deep to ever be selected; nothing to classify
            found = values.setdefault(str(path), [])
            found.extend(loc.container[loc.key] for loc in find(event, path))  # type: ignore[index]
    return values


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


def samples_audit(
    caller: Caller,
    event_type: str,
    workspace_id: str,
    target: str,
    events: Sequence[dict[str, Any]],
    **details: JSONValue,
) -> AuditEntry:
    """The record of a call that accepted sample events: how many, and whose; never a value.

    ``end_user_id`` is set when every sample concerns the same end user; with several, the
    record counts them (their ids are in the samples, which are not kept).
    """
    users = end_users(events)
    entry = AuditEntry.by(
        caller,
        event_type=event_type,
        workspace_id=workspace_id,
        target=target,
        details={"sample_count": len(events), "end_user_count": len(users), **details},
    )
    return replace(entry, end_user_id=users[0]) if len(users) == 1 else entry


def refuse_default(matcher_id: str) -> None:
    if matcher_id.startswith("default:"):
        raise FailedPrecondition(
            f"{matcher_id} is a default matcher and cannot be removed; override the paths it "
            "classifies with SetClassification instead"
        )


class Privacy:
    """ListClassifications and SetClassification for one workspace at a time."""

    def __init__(self, store: PrivacyStore, clock: Callable[[], datetime] | None = None) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    async def _require_workspace(self, workspace_id: str) -> None:
        if not await self._store.workspace_exists(require_id(workspace_id, "workspace_id")):
            raise NotFound(f"workspace {workspace_id} does not exist; create it first")

    async def list_classifications(
        self,
        caller: Caller,
        workspace_id: str,
        paths: Sequence[str],
        samples: Sequence[str],
        page_size: int,
        page_token: str,
    ) -> ClassificationPage:
        """Every known path classified; the samples' paths become known (their values never)."""
        require(caller.principal, require_id(workspace_id, "workspace_id"), Role.VIEWER)
        await self._require_workspace(workspace_id)
        page = Page.parse(page_size, page_token, f"classifications:{workspace_id}")
        if len(paths) > MAX_EXTRA_PATHS:
            raise InvalidArgument(f"at most {MAX_EXTRA_PATHS} paths per call")
        extra = {str(parse(text)) for text in paths}
        events = parse_samples(samples)
        values = sampled_values(events)
        state = await self._store.classifier_state(workspace_id)
        classifier = state.classifier()
        hits = {path: classifier.value_matches(path, found) for path, found in values.items()}
        signals = {path: Signals(*detect(found)) for path, found in values.items()}
        if events:
            # Sample events are PHI: accepting them is audited, with what was learnt from them.
            audit = samples_audit(
                caller,
                "Privacy Sample Events Classified",
                workspace_id,
                f"workspace/{workspace_id}",
                events,
                path_count=len(values),
            )
            await self._store.record_samples(
                workspace_id,
                values,
                {p: h for p, h in hits.items() if h},
                {p: s for p, s in signals.items() if s.detections or s.kinds},
                audit,
            )
        known = sorted(await self._store.known_paths(workspace_id) | extra | set(values))
        window = known[page.after : page.after + page.size]
        end = page.after + len(window)
        return ClassificationPage(
            fields=[
                classifier.classify(parse(p), hits.get(p, frozenset()), signals.get(p))
                for p in window
            ],
            matchers=[*DEFAULT_MATCHERS, *state.matchers],
            next_page_token=(
                encode_token(f"classifications:{workspace_id}", end) if end < len(known) else ""
            ),
        )

    async def set_override(
        self,
        caller: Caller,
        workspace_id: str,
        path_text: str,
        classification: Classification | None,
    ) -> FieldClassification:
        """Sets (or with None removes) the override of one path; answers its new classification."""
        require(caller.principal, require_id(workspace_id, "workspace_id"), Role.EDITOR)
        path = parse(path_text)
        text = str(path)
        override = (
            None
            if classification is None
            else Override(text, classification, caller.actor_id, self._clock())
        )

        def audit(previous: Classification | None) -> AuditEntry:
            return AuditEntry.by(
                caller,
                event_type="Privacy Classification Modified",
                workspace_id=workspace_id,
                target=text,
                details={
                    "path": text,
                    "classification": classification.value if classification else "none",
                    "previous_override": previous.value if previous else "none",
                },
            )

        if not await self._store.set_override(workspace_id, text, override, audit):
            raise NotFound(f"workspace {workspace_id} does not exist; create it first")
        state = await self._store.classifier_state(workspace_id)
        return state.classifier().classify(path)

    async def add_matcher(
        self,
        caller: Caller,
        workspace_id: str,
        name: str,
        target: MatcherTarget | None,
        kind: MatchKind | None,
        pattern: str,
        classification: Classification | None,
    ) -> Matcher:
        """Adds a custom matcher; at most MAX_CUSTOM_MATCHERS per workspace."""
        require(caller.principal, require_id(workspace_id, "workspace_id"), Role.EDITOR)
        name, target, kind, pattern = validate_matcher(name, target, kind, pattern)
        if classification is None:
            raise InvalidArgument(
                "a matcher's classification must be CLASSIFICATION_RED, _YELLOW or _GREEN"
            )
        matcher = Matcher(
            matcher_id=new_id("mt_"),
            name=name,
            target=target,
            kind=kind,
            pattern=pattern,
            classification=classification,
            created_at=self._clock(),
            created_by=caller.actor_id,
        )

        def check(count: int) -> None:
            if count >= MAX_CUSTOM_MATCHERS:
                raise ResourceExhausted(
                    f"workspace {workspace_id} already has {MAX_CUSTOM_MATCHERS} custom "
                    "matchers, the most allowed; remove one before adding another"
                )

        # The pattern itself stays out of the audit record: an exact value may be sensitive.
        audit = AuditEntry.by(
            caller,
            event_type="Privacy Matcher Added",
            workspace_id=workspace_id,
            target=matcher.matcher_id,
            details={
                "matcher_id": matcher.matcher_id,
                "name": name,
                "target": target.value,
                "kind": kind.value,
                "classification": classification.value,
            },
        )
        if not await self._store.add_matcher(workspace_id, matcher, check, audit):
            raise NotFound(f"workspace {workspace_id} does not exist; create it first")
        return matcher

    async def remove_matcher(self, caller: Caller, workspace_id: str, matcher_id: str) -> None:
        require(caller.principal, require_id(workspace_id, "workspace_id"), Role.EDITOR)
        require_id(matcher_id, "remove_matcher_id")
        refuse_default(matcher_id)

        def audit(matcher: Matcher) -> AuditEntry:
            return AuditEntry.by(
                caller,
                event_type="Privacy Matcher Removed",
                workspace_id=workspace_id,
                target=matcher_id,
                details={
                    "matcher_id": matcher_id,
                    "name": matcher.name,
                    "target": matcher.target.value,
                    "kind": matcher.kind.value,
                    "classification": matcher.classification.value,
                },
            )

        if await self._store.remove_matcher(workspace_id, matcher_id, audit) is None:
            raise NotFound(f"workspace {workspace_id} has no custom matcher {matcher_id}")
