"""Classification as a workspace sees it: listing known paths, overrides and custom matchers."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from services.common.audit import AuditEntry, JSONValue
from services.common.data.paging import Page, encode_token
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.common.fieldpath import parse
from services.common.offload import Offload
from services.common.security.auth import Caller, Role
from services.common.security.authz import require
from services.policysvc import analysis, caps
from services.policysvc.analysis import ClassifierState
from services.policysvc.catalog import new_id, require_id
from services.policysvc.classification import (
    DEFAULT_MATCHERS,
    MAX_CUSTOM_MATCHERS,
    Classification,
    FieldClassification,
    Matcher,
    MatcherTarget,
    MatchKind,
    Override,
    Signals,
    validate_matcher,
)


@dataclass(frozen=True)
class ClassificationPage:
    fields: list[FieldClassification]
    matchers: list[Matcher]
    next_page_token: str


class PrivacyStore(Protocol):
    async def workspace_exists(self, workspace_id: str) -> bool: ...

    async def classifier_state(
        self, workspace_id: str, paths: Collection[str] = ()
    ) -> ClassifierState:
        """The workspace's matchers, with its overrides and sampled evidence at ``paths``."""
        ...

    async def known_page(
        self, workspace_id: str, extra: Collection[str], after: int, size: int
    ) -> tuple[list[str], bool]:
        """``size`` paths after the first ``after`` of the known paths and ``extra`` in code
        point order, and whether more follow."""
        ...

    async def record_samples(
        self,
        workspace_id: str,
        paths: Iterable[str],
        hits: Mapping[str, frozenset[str]],
        check: Callable[[int], None],
        signals: Mapping[str, Signals] | None = None,
        audit: AuditEntry | None = None,
    ) -> None:
        """Stores the paths, hits, signals and the audit record in one transaction; ``check``
        sees the workspace's path count before commit (raising rolls all of it back)."""
        ...

    async def set_override(
        self,
        workspace_id: str,
        path: str,
        override: Override | None,
        audit: Callable[[Classification | None], AuditEntry],
        check: Callable[[int], None],
    ) -> bool:
        """``check`` sees the workspace's override count when one is added."""
        ...

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


def samples_audit(
    caller: Caller,
    event_type: str,
    workspace_id: str,
    target: str,
    sample_count: int,
    end_users: Sequence[str],
    **details: JSONValue,
) -> AuditEntry:
    """The record of a call that accepted sample events: how many, and whose; never a value.

    ``end_user_id`` is set when every sample concerns the same end user; with several, the
    record counts them (their ids are in the samples, which are not kept).
    """
    entry = AuditEntry.by(
        caller,
        event_type=event_type,
        workspace_id=workspace_id,
        target=target,
        details={"sample_count": sample_count, "end_user_count": len(end_users), **details},
    )
    return replace(entry, end_user_id=end_users[0]) if len(end_users) == 1 else entry


def refuse_default(matcher_id: str) -> None:
    if matcher_id.startswith("default:"):
        raise FailedPrecondition(
            f"{matcher_id} is a default matcher and cannot be removed; override the paths it "
            "classifies with SetClassification instead"
        )


class Privacy:
    """ListClassifications and SetClassification for one workspace at a time."""

    def __init__(
        self,
        store: PrivacyStore,
        offload: Offload | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._offload = offload or Offload("policysvc")
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
        """Every known path classified; the samples' paths become known (their values never).

        The caller is authorized and the caps counted before anything is parsed; parsing,
        walking and matching run off the event loop when they are large.
        """
        require(caller.principal, require_id(workspace_id, "workspace_id"), Role.VIEWER)
        await self._require_workspace(workspace_id)
        page = Page.parse(page_size, page_token, f"classifications:{workspace_id}")
        caps.check_paths(len(paths), "paths")
        caps.check_samples(samples)
        run = self._offload.run
        extra = set(await run(analysis.parse_cost(paths), analysis.canonical_paths, paths, "paths"))
        sampled = analysis.SampleAnalysis([], {})
        if samples:
            state = await self._store.classifier_state(workspace_id)  # the matchers are enough
            cost = analysis.sample_cost(samples, state)
            sampled = await run(cost, analysis.analyse_samples, samples, state)
            # Sample events are PHI: accepting them is audited, with what was learnt from them,
            # in the transaction that stores it.
            audit = samples_audit(
                caller,
                "Privacy Sample Events Classified",
                workspace_id,
                f"workspace/{workspace_id}",
                len(samples),
                sampled.end_users,
                path_count=len(sampled.paths),
            )
            await self._store.record_samples(
                workspace_id,
                sampled.paths,
                sampled.hits,
                lambda count: caps.check_stored_paths(count, workspace_id),
                sampled.signals,
                audit,
            )
        window, more = await self._store.known_page(
            workspace_id, extra | set(sampled.paths), page.after, page.size
        )
        end = page.after + len(window)
        state = await self._store.classifier_state(workspace_id, window)
        fields = await run(
            analysis.classify_cost(len(window), state),
            analysis.classify_paths,
            state,
            window,
            sampled,
        )
        return ClassificationPage(
            fields=fields,
            matchers=[*DEFAULT_MATCHERS, *state.matchers],
            next_page_token=(encode_token(f"classifications:{workspace_id}", end) if more else ""),
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
        path = parse(path_text, "override.path")
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

        def check(count: int) -> None:
            caps.check_overrides(count, workspace_id)

        if not await self._store.set_override(workspace_id, text, override, audit, check):
            raise NotFound(f"workspace {workspace_id} does not exist; create it first")
        state = await self._store.classifier_state(workspace_id, [text])
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
