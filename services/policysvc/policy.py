"""Versioned, forward-looking encryption policies and the rules a change must pass.

Each change appends a version (1, 2, ...; 0 means never configured) carrying the whole field
list. A change names the version it was based on; the store runs the decision under a lock on
the destination, so of two concurrent changes based on one version exactly one wins and the
other is ABORTED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

import orjson

from services.common.audit import AuditEntry
from services.common.data.paging import Page, encode_token
from services.common.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from services.common.limits import check_count
from services.common.offload import Offload
from services.common.security.auth import Caller, PrincipalKind, Role
from services.common.security.authz import require
from services.common.vocabulary import EncryptionFormat
from services.policysvc import analysis, caps
from services.policysvc.analysis import ClassifierState, EventPreview
from services.policysvc.catalog import Destination, Workspace, check_can_encrypt, require_id
from services.policysvc.privacy import samples_audit

MAX_DESTINATION_FILTER = 1000


@dataclass(frozen=True)
class Policy:
    destination_id: str
    workspace_id: str
    version: int = 0
    enabled: bool = False
    format: EncryptionFormat = EncryptionFormat.JWE
    fields: tuple[str, ...] = ()
    created_at: datetime | None = None
    created_by: str = ""
    change_summary: str = ""


@dataclass(frozen=True)
class PolicyContext:
    """What a decision needs, read under the destination's lock."""

    workspace: Workspace
    destination: Destination
    head: Policy
    classifier_state: ClassifierState


@dataclass(frozen=True)
class PolicyChange:
    policy: Policy
    audit: AuditEntry


@dataclass(frozen=True)
class VersionPage:
    versions: list[Policy]
    next_page_token: str


@dataclass(frozen=True)
class Preview:
    policy_version: int
    previews: list[EventPreview]
    problems: list[str]


Decide = Callable[[PolicyContext], Awaitable[PolicyChange]]

# The paths a decision classifies, given the destination's head policy. The context carries the
# workspace's evidence (overrides, what samples showed) at those paths only: a workspace may
# store 20,000 sampled paths, and reading all of them for every change or preview cost the
# event loop tens of milliseconds per request (found by ``python -m benchmarks cost``).
Concerning = Callable[[Policy], Collection[str]]


def no_paths(head: Policy) -> Collection[str]:
    return ()


class PolicyStore(Protocol):
    async def change_policy(
        self, destination_id: str, decide: Decide, concerning: Concerning = no_paths
    ) -> Policy | None:
        """Runs ``decide`` under the destination's lock and stores its result atomically; the
        context's classifier state holds the evidence at ``concerning(head)`` only."""
        ...

    async def workspace_of(self, destination_id: str) -> str | None:
        """The workspace of a destination (None if there is none): enough to authorize."""
        ...

    async def load_context(
        self, destination_id: str, concerning: Concerning = no_paths
    ) -> PolicyContext | None: ...

    async def record_audit(self, entry: AuditEntry) -> None:
        """Makes an audit record durable (a read that accepted PHI), before the answer."""
        ...

    async def get_policy(
        self, destination_id: str, audit: Callable[[Policy], AuditEntry] | None
    ) -> Policy | None: ...

    async def list_versions(
        self,
        destination_id: str,
        before: int,
        limit: int,
        audit: Callable[[Policy], AuditEntry] | None,
    ) -> list[Policy] | None: ...


def _check_version(head: Policy, expected: int) -> None:
    if head.version != expected:
        raise Aborted(
            f"the policy of destination {head.destination_id} is at version {head.version}, "
            f"not the expected {expected}; read it again with GetPolicy and retry"
        )


def _summary(action: str, added: Sequence[str], removed: Sequence[str]) -> str:
    parts = [action]
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    text = "; ".join(parts)
    return text if len(text) <= 500 else text[:497] + "..."


# DisableEncryption's answer: the reference product says the same before it turns encryption off.
DISABLED_NOTICE = (
    "Encryption is off for future events only: data already sent stays encrypted and opens "
    "only with this destination's private keys, which PHIseal does not hold. Fields named by "
    "the previous policy now leave in plaintext; EnableEncryption turns it back on."
)


class Policies:
    """EnableEncryption, UpdateEncryptedFields, DisableEncryption, reads and previews."""

    def __init__(
        self,
        store: PolicyStore,
        offload: Offload | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._offload = offload or Offload("policysvc")
        self._clock = clock or (lambda: datetime.now(UTC))

    async def _authorize(self, caller: Caller, destination_id: str, role: Role) -> None:
        """Resolves the destination and checks the caller's role: before anything expensive."""
        workspace_id = await self._store.workspace_of(require_id(destination_id, "destination_id"))
        if workspace_id is None:
            raise NotFound(f"destination {destination_id} does not exist")
        require(caller.principal, workspace_id, role)

    async def _selection(self, texts: Sequence[str], what: str) -> list[str]:
        """parse_selection's canonical spellings, off the loop when the list is long."""
        caps.check_paths(len(texts), what)
        return await self._offload.run(
            analysis.parse_cost(texts), analysis.canonical_selection, texts, what
        )

    async def _require_encryptable(self, ctx: PolicyContext, paths: Sequence[str]) -> None:
        problems = check_can_encrypt(ctx.workspace, ctx.destination)
        if problems:
            raise FailedPrecondition("; ".join(problems))
        problems = await self._problems(ctx.classifier_state, paths)
        if problems:
            raise FailedPrecondition("cannot encrypt: " + "; ".join(problems))

    async def _problems(self, state: ClassifierState, paths: Sequence[str]) -> list[str]:
        return await self._offload.run(
            analysis.classify_cost(len(paths), state),
            analysis.classification_problems,
            state,
            paths,
        )

    def _next(
        self,
        caller: Caller,
        ctx: PolicyContext,
        *,
        enabled: bool,
        fmt: EncryptionFormat,
        fields: Sequence[str],
    ) -> Policy:
        return Policy(
            destination_id=ctx.destination.destination_id,
            workspace_id=ctx.workspace.workspace_id,
            version=ctx.head.version + 1,
            enabled=enabled,
            format=fmt,
            fields=tuple(fields),
            created_at=self._clock(),
            created_by=caller.actor_id,
        )

    async def _change(
        self, destination_id: str, decide: Decide, concerning: Concerning = no_paths
    ) -> Policy:
        policy = await self._store.change_policy(
            require_id(destination_id, "destination_id"), decide, concerning
        )
        if policy is None:
            raise NotFound(f"destination {destination_id} does not exist")
        return policy

    async def enable(
        self,
        caller: Caller,
        destination_id: str,
        fields: Sequence[str],
        fmt: EncryptionFormat,
        expected_version: int,
    ) -> Policy:
        """Turns encryption on with exactly these fields (or replaces the fields and format)."""
        if not fields:
            raise InvalidArgument(
                "EnableEncryption needs at least one field, e.g. traits.email; to stop "
                "encrypting use DisableEncryption"
            )
        await self._authorize(caller, destination_id, Role.EDITOR)
        names = await self._selection(fields, "fields")

        async def decide(ctx: PolicyContext) -> PolicyChange:
            require(caller.principal, ctx.workspace.workspace_id, Role.EDITOR)
            _check_version(ctx.head, expected_version)
            await self._require_encryptable(ctx, names)
            before = set(ctx.head.fields) if ctx.head.enabled else set()
            added = [n for n in names if n not in before]
            removed = sorted(before - set(names))
            action = "changed fields" if ctx.head.enabled else "enabled"
            policy = self._next(caller, ctx, enabled=True, fmt=fmt, fields=names)
            policy = _with_summary(policy, _summary(f"{action} ({fmt.value})", added, removed))
            return PolicyChange(
                policy,
                AuditEntry.by(
                    caller,
                    event_type="Destination Encryption Enabled",
                    workspace_id=ctx.workspace.workspace_id,
                    target=ctx.destination.destination_id,
                    details={
                        "version": policy.version,
                        "previous_version": ctx.head.version,
                        "fields": names,
                        "added": added,
                        "removed": removed,
                        "format": fmt.value,
                    },
                ),
            )

        return await self._change(destination_id, decide, lambda head: names)

    async def update(
        self,
        caller: Caller,
        destination_id: str,
        add: Sequence[str],
        remove: Sequence[str],
        expected_version: int,
    ) -> Policy:
        """Adds and removes fields of an enabled policy; only the added ones must be yellow."""
        if not add and not remove:
            raise InvalidArgument("UpdateEncryptedFields needs a path to add or remove")
        await self._authorize(caller, destination_id, Role.EDITOR)
        caps.check_paths(len(add) + len(remove), "add and remove")
        to_add = await self._selection(add, "add")
        to_remove = sorted(
            set(
                await self._offload.run(
                    analysis.parse_cost(remove), analysis.canonical_paths, remove, "remove"
                )
            )
        )
        both = set(to_add) & set(to_remove)
        if both:
            raise InvalidArgument(f"a path cannot be both added and removed: {', '.join(both)}")

        async def decide(ctx: PolicyContext) -> PolicyChange:
            require(caller.principal, ctx.workspace.workspace_id, Role.EDITOR)
            _check_version(ctx.head, expected_version)
            if not ctx.head.enabled:
                raise FailedPrecondition(
                    f"encryption is not enabled for destination {ctx.head.destination_id}; "
                    "call EnableEncryption with the fields to encrypt"
                )
            current = set(ctx.head.fields)
            absent = [p for p in to_remove if p not in current]
            if absent:
                raise InvalidArgument(
                    f"cannot remove fields the policy does not hold: {', '.join(absent)}"
                )
            present = [p for p in to_add if p in current]
            if present:
                raise InvalidArgument(f"fields already encrypted: {', '.join(present)}")
            remaining = sorted((current - set(to_remove)) | set(to_add))
            if not remaining:
                raise InvalidArgument(
                    "this would leave no field to encrypt; use DisableEncryption instead"
                )
            caps.check_policy_size(len(remaining))
            # Refuses new overlaps (with "fields" naming the policy's list after the change).
            names = await self._offload.run(
                analysis.parse_cost(remaining), analysis.canonical_selection, remaining, "fields"
            )
            if to_add:
                await self._require_encryptable(ctx, to_add)
            added = list(to_add)
            policy = self._next(caller, ctx, enabled=True, fmt=ctx.head.format, fields=names)
            policy = _with_summary(policy, _summary("updated", added, to_remove))
            return PolicyChange(
                policy,
                AuditEntry.by(
                    caller,
                    event_type="Destination Encrypted Fields Modified",
                    workspace_id=ctx.workspace.workspace_id,
                    target=ctx.destination.destination_id,
                    details={
                        "version": policy.version,
                        "previous_version": ctx.head.version,
                        "added": added,
                        "removed": to_remove,
                    },
                ),
            )

        return await self._change(destination_id, decide, lambda head: to_add)

    async def disable(
        self, caller: Caller, destination_id: str, expected_version: int, confirmation: str
    ) -> Policy:
        """Stops future encryption once the caller confirmed by naming the destination; nothing
        already sent is decrypted (DISABLED_NOTICE)."""

        async def decide(ctx: PolicyContext) -> PolicyChange:
            # Disabling weakens protection: admin, not editor.
            require(caller.principal, ctx.workspace.workspace_id, Role.ADMIN)
            if confirmation != ctx.destination.destination_id:
                raise InvalidArgument(
                    "turning encryption off needs confirmation: set confirm_destination_id to "
                    f"{ctx.destination.destination_id}. Future events will then leave with "
                    "their fields in plaintext; data already sent stays encrypted"
                )
            _check_version(ctx.head, expected_version)
            if not ctx.head.enabled:
                raise FailedPrecondition(
                    f"encryption is not enabled for destination {ctx.head.destination_id}"
                )
            policy = self._next(caller, ctx, enabled=False, fmt=ctx.head.format, fields=())
            policy = _with_summary(policy, "disabled")
            return PolicyChange(
                policy,
                AuditEntry.by(
                    caller,
                    event_type="Destination Encryption Disabled",
                    workspace_id=ctx.workspace.workspace_id,
                    target=ctx.destination.destination_id,
                    details={
                        "version": policy.version,
                        "previous_version": ctx.head.version,
                        "fields_before": list(ctx.head.fields),
                    },
                ),
            )

        return await self._change(destination_id, decide)

    async def get(self, caller: Caller, destination_id: str) -> Policy:
        """The current policy; a person's read is audited, a peer service's is not."""
        policy = await self._store.get_policy(
            require_id(destination_id, "destination_id"), _viewed_audit(caller)
        )
        if policy is None:
            raise NotFound(f"destination {destination_id} does not exist")
        return policy

    async def list_versions(
        self, caller: Caller, destination_id: str, page_size: int, page_token: str
    ) -> VersionPage:
        """Newest first; pages continue below the last version returned."""
        require_id(destination_id, "destination_id")
        scope = f"versions:{destination_id}"
        page = Page.parse(page_size, page_token, scope)
        before = page.after or (1 << 62)
        rows = await self._store.list_versions(
            destination_id, before, page.size + 1, _viewed_audit(caller)
        )
        if rows is None:
            raise NotFound(f"destination {destination_id} does not exist")
        more = len(rows) > page.size
        rows = rows[: page.size]
        return VersionPage(rows, encode_token(scope, rows[-1].version) if more else "")

    async def preview(
        self,
        caller: Caller,
        destination_id: str,
        samples: Sequence[str],
        proposed: Sequence[str],
        use_proposed: bool,
    ) -> Preview:
        """Which paths of each sample the current or proposed fields would encrypt."""
        await self._authorize(caller, destination_id, Role.EDITOR)
        caps.check_samples(samples)
        proposal = await self._selection(proposed, "proposed_fields") if use_proposed else []

        def shown_paths(head: Policy) -> list[str]:
            if use_proposed:
                return proposal
            return list(head.fields) if head.enabled else []

        ctx = await self._store.load_context(destination_id, shown_paths)
        if ctx is None:
            raise NotFound(f"destination {destination_id} does not exist")
        require(caller.principal, ctx.workspace.workspace_id, Role.EDITOR)
        paths = shown_paths(ctx.head)
        version = 0 if use_proposed else ctx.head.version
        problems = check_can_encrypt(ctx.workspace, ctx.destination)
        problems += await self._problems(ctx.classifier_state, paths)
        cost = sum(len(s) for s in samples) * 0.3 + analysis.parse_cost(paths)
        shown = await self._offload.run(cost, analysis.preview_samples, samples, paths)
        # Sample events are PHI: the preview is audited before it is answered.
        await self._store.record_audit(
            samples_audit(
                caller,
                "Destination Encryption Previewed",
                ctx.workspace.workspace_id,
                ctx.destination.destination_id,
                len(samples) - shown.malformed,
                shown.end_users,
                proposed=use_proposed,
                field_count=len(paths),
                malformed_count=shown.malformed,
            )
        )
        return Preview(version, shown.previews, problems)


def _with_summary(policy: Policy, summary: str) -> Policy:
    return replace(policy, change_summary=summary)


def _viewed_audit(caller: Caller) -> Callable[[Policy], AuditEntry] | None:
    """The audit record of a person reading a policy; None for a peer service (hot path).

    The store calls it once the policy (and so its workspace) is known, inside the read's
    transaction: the person's role is checked there, before anything is answered.
    """
    if caller.principal.kind is PrincipalKind.SERVICE:
        return None

    def audit(policy: Policy) -> AuditEntry:
        require(caller.principal, policy.workspace_id, Role.VIEWER)
        return AuditEntry.by(
            caller,
            event_type="Destination Encryption Policy Viewed",
            workspace_id=policy.workspace_id,
            target=policy.destination_id,
            details={"version": policy.version},
        )

    return audit


def validate_filter(destination_ids: Sequence[str]) -> frozenset[str]:
    """WatchPolicies' destination filter (empty means every destination)."""
    check_count(len(destination_ids), MAX_DESTINATION_FILTER, "destination_ids")
    return frozenset(require_id(d, "destination_ids[]") for d in destination_ids)


def parse_change(payload: str) -> tuple[str, int] | None:
    """The (destination_id, version) of a change notification, or None if unreadable."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    destination_id, version = data.get("destination_id"), data.get("version")
    if not isinstance(destination_id, str) or not isinstance(version, int):
        return None
    return destination_id, version
