"""In-memory stand-ins for policysvc's CatalogStore, PrivacyStore and PolicyStore.

They share one ``FakePolicyDatabase``, as the real stores share one schema (a policy decision
reads the workspace, the destination and the classifier state). The contract suites in
tests/policysvc/test_*_store_contract.py keep each equal to its PostgreSQL store.

Each write is one transaction: everything that can refuse it (a cap check, an audit callback,
the outbox's check of the entry, a version already taken) runs before anything is changed, so
a refusal leaves nothing behind, as a rolled-back PostgreSQL transaction keeps nothing.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from services.common.audit import AuditEntry
from services.common.errors import Aborted, AlreadyExists, NotFound
from services.policysvc.analysis import ClassifierState
from services.policysvc.catalog import Destination, HipaaEligibility, Workspace
from services.policysvc.classification import Classification, Matcher, Override, Signals
from services.policysvc.policy import Concerning, Decide, Policy, PolicyContext, no_paths


@dataclass
class FakePolicyDatabase:
    """The policysvc schema's tables as dictionaries, its outbox and its announcements."""

    workspaces: dict[str, Workspace] = field(default_factory=dict)
    destinations: dict[str, tuple[int, Destination]] = field(default_factory=dict)
    matchers: dict[str, tuple[int, str, Matcher]] = field(default_factory=dict)
    overrides: dict[tuple[str, str], Override] = field(default_factory=dict)
    sample_paths: set[tuple[str, str]] = field(default_factory=set)
    value_matches: set[tuple[str, str, str]] = field(default_factory=set)
    signals: set[tuple[str, str, str]] = field(default_factory=set)  # (workspace, path, signal)
    policies: dict[str, list[Policy]] = field(default_factory=dict)
    outbox: list[AuditEntry] = field(default_factory=list)
    announced: list[tuple[str, int]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def to_outbox(self, entry: AuditEntry) -> None:
        """append_to_outbox: an entry auditsvc would refuse fails the change (InvalidArgument)."""
        entry.check("policysvc")
        self.outbox.append(entry)

    def catalog(self) -> FakeCatalogStore:
        return FakeCatalogStore(self)

    def privacy(self) -> FakePrivacyStore:
        return FakePrivacyStore(self)

    def policy(self) -> FakePolicyStore:
        return FakePolicyStore(self)

    def classifier_state(self, workspace_id: str, paths: Collection[str]) -> ClassifierState:
        rows = sorted(self.matchers.values(), key=lambda row: row[0])
        wanted = set(paths)
        hits: dict[str, set[str]] = {}
        for ws, path, matcher_id in self.value_matches:
            if ws == workspace_id and path in wanted:
                hits.setdefault(path, set()).add(matcher_id)
        stored: dict[str, list[str]] = {}
        for ws, path, signal in self.signals:
            if ws == workspace_id and path in wanted:
                stored.setdefault(path, []).append(signal)
        return ClassifierState(
            [m for _, ws, m in rows if ws == workspace_id],
            [o for (ws, p), o in self.overrides.items() if ws == workspace_id and p in wanted],
            {p: frozenset(h) for p, h in hits.items()},
            {p: Signals.decode(found) for p, found in stored.items()},
        )

    def head(self, destination: Destination) -> Policy:
        versions = self.policies.get(destination.destination_id, [])
        return (
            versions[-1]
            if versions
            else Policy(destination.destination_id, destination.workspace_id)
        )


class FakeCatalogStore:
    def __init__(self, db: FakePolicyDatabase) -> None:
        self._db = db

    async def insert_workspace(self, workspace: Workspace, audit: AuditEntry) -> None:
        self._db.to_outbox(audit)
        self._db.workspaces[workspace.workspace_id] = workspace

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        return self._db.workspaces.get(workspace_id)

    async def update_hipaa(
        self,
        workspace_id: str,
        hipaa: HipaaEligibility,
        audit: Callable[[Workspace], AuditEntry],
    ) -> Workspace | None:
        before = self._db.workspaces.get(workspace_id)
        if before is None:
            return None
        self._db.to_outbox(audit(before))
        self._db.workspaces[workspace_id] = replace(before, hipaa=hipaa)
        return before

    async def insert_destination(self, destination: Destination, audit: AuditEntry) -> None:
        if destination.workspace_id not in self._db.workspaces:
            raise NotFound(f"workspace {destination.workspace_id} does not exist; create it first")
        taken = any(
            d.workspace_id == destination.workspace_id and d.name == destination.name
            for _, d in self._db.destinations.values()
        )
        if taken or destination.destination_id in self._db.destinations:
            raise AlreadyExists(
                f"workspace {destination.workspace_id} already has a destination named "
                f"{destination.name!r}; choose another name"
            )
        self._db.to_outbox(audit)
        self._db.destinations[destination.destination_id] = (next(self._db._seq), destination)

    async def get_destination(self, destination_id: str) -> Destination | None:
        found = self._db.destinations.get(destination_id)
        return None if found is None else found[1]

    async def list_destinations(
        self, workspace_id: str, after: int, limit: int
    ) -> Sequence[tuple[int, Destination]]:
        rows = sorted(
            (seq, d)
            for seq, d in self._db.destinations.values()
            if d.workspace_id == workspace_id and seq > after
        )
        return rows[:limit]


class FakePrivacyStore:
    def __init__(self, db: FakePolicyDatabase) -> None:
        self._db = db

    async def workspace_exists(self, workspace_id: str) -> bool:
        return workspace_id in self._db.workspaces

    async def classifier_state(
        self, workspace_id: str, paths: Collection[str] = ()
    ) -> ClassifierState:
        return self._db.classifier_state(workspace_id, paths)

    def _known(self, workspace_id: str) -> set[str]:
        db = self._db
        paths = {p for ws, p in db.sample_paths if ws == workspace_id}
        paths |= {p for ws, p in db.overrides if ws == workspace_id}
        for _, destination in db.destinations.values():
            if destination.workspace_id == workspace_id:
                paths |= set(db.head(destination).fields)
        return paths

    async def known_page(
        self, workspace_id: str, extra: Collection[str], after: int, size: int
    ) -> tuple[list[str], bool]:
        known = sorted(self._known(workspace_id) | set(extra))
        return known[after : after + size], len(known) > after + size

    async def record_samples(
        self,
        workspace_id: str,
        paths: Iterable[str],
        hits: Mapping[str, frozenset[str]],
        check: Callable[[int], None],
        signals: Mapping[str, Signals] | None = None,
        audit: AuditEntry | None = None,
    ) -> None:
        merged = self._db.sample_paths | {(workspace_id, p) for p in paths}
        # The workspace's distinct paths with these ones, as PostgreSQL counts them after the
        # insert and before commit; raising keeps nothing (not the audit entry either).
        check(sum(1 for ws, _ in merged if ws == workspace_id))
        if audit is not None:
            self._db.to_outbox(audit)
        self._db.sample_paths = merged
        for path, shown in (signals or {}).items():
            self._db.signals |= {(workspace_id, path, signal) for signal in shown.encode()}
        for path, matcher_ids in hits.items():
            for matcher_id in matcher_ids:
                # A matcher removed meanwhile (or another workspace's) records nothing.
                found = self._db.matchers.get(matcher_id)
                if found is not None and found[1] == workspace_id:
                    self._db.value_matches.add((workspace_id, path, matcher_id))

    async def set_override(
        self,
        workspace_id: str,
        path: str,
        override: Override | None,
        audit: Callable[[Classification | None], AuditEntry],
        check: Callable[[int], None],
    ) -> bool:
        if workspace_id not in self._db.workspaces:
            return False
        previous = self._db.overrides.get((workspace_id, path))
        if previous is None and override is not None:
            # Only an added override counts, and check sees the count with it.
            check(sum(1 for ws, _ in self._db.overrides if ws == workspace_id) + 1)
        self._db.to_outbox(audit(None if previous is None else previous.classification))
        if override is None:
            self._db.overrides.pop((workspace_id, path), None)
        else:
            self._db.overrides[(workspace_id, path)] = override
        return True

    async def add_matcher(
        self,
        workspace_id: str,
        matcher: Matcher,
        check: Callable[[int], None],
        audit: AuditEntry,
    ) -> bool:
        if workspace_id not in self._db.workspaces:
            return False
        check(sum(1 for _, ws, _ in self._db.matchers.values() if ws == workspace_id))
        self._db.to_outbox(audit)
        self._db.matchers[matcher.matcher_id] = (next(self._db._seq), workspace_id, matcher)
        return True

    async def remove_matcher(
        self, workspace_id: str, matcher_id: str, audit: Callable[[Matcher], AuditEntry]
    ) -> Matcher | None:
        found = self._db.matchers.get(matcher_id)
        if found is None or found[1] != workspace_id:
            return None
        self._db.to_outbox(audit(found[2]))
        del self._db.matchers[matcher_id]
        # ON DELETE CASCADE: what the matcher found in samples goes with it.
        self._db.value_matches = {v for v in self._db.value_matches if v[2] != matcher_id}
        return found[2]


class FakePolicyStore:
    def __init__(self, db: FakePolicyDatabase) -> None:
        self._db = db

    def _context(self, destination_id: str, concerning: Concerning) -> PolicyContext | None:
        found = self._db.destinations.get(destination_id)
        if found is None:
            return None
        destination = found[1]
        head = self._db.head(destination)
        return PolicyContext(
            self._db.workspaces[destination.workspace_id],
            destination,
            head,
            self._db.classifier_state(destination.workspace_id, concerning(head)),
        )

    async def change_policy(
        self, destination_id: str, decide: Decide, concerning: Concerning = no_paths
    ) -> Policy | None:
        async with self._db._locks.setdefault(destination_id, asyncio.Lock()):
            ctx = self._context(destination_id, concerning)
            if ctx is None:
                return None
            # Awaited under the destination's lock, as PostgreSQL awaits it holding the row
            # lock; raising refuses the change and nothing is written.
            change = await decide(ctx)
            versions = self._db.policies.get(destination_id, [])
            if any(p.version == change.policy.version for p in versions):
                raise Aborted(
                    f"the policy of destination {destination_id} changed concurrently; read it "
                    "again with GetPolicy and retry"
                )
            self._db.to_outbox(change.audit)
            self._db.policies[destination_id] = [*versions, change.policy]
            self._db.announced.append((destination_id, change.policy.version))
            return change.policy

    async def workspace_of(self, destination_id: str) -> str | None:
        found = self._db.destinations.get(destination_id)
        return None if found is None else found[1].workspace_id

    async def load_context(
        self, destination_id: str, concerning: Concerning = no_paths
    ) -> PolicyContext | None:
        return self._context(destination_id, concerning)

    async def record_audit(self, entry: AuditEntry) -> None:
        self._db.to_outbox(entry)

    async def get_policy(
        self, destination_id: str, audit: Callable[[Policy], AuditEntry] | None
    ) -> Policy | None:
        found = self._db.destinations.get(destination_id)
        if found is None:
            return None
        policy = self._db.head(found[1])
        if audit is not None:
            self._db.to_outbox(audit(policy))
        return policy

    async def list_versions(
        self,
        destination_id: str,
        before: int,
        limit: int,
        audit: Callable[[Policy], AuditEntry] | None,
    ) -> list[Policy] | None:
        found = self._db.destinations.get(destination_id)
        if found is None:
            return None
        versions = self._db.policies.get(destination_id, [])
        rows = sorted((p for p in versions if p.version < before), key=lambda p: -p.version)
        rows = rows[:limit]
        if audit is not None:
            self._db.to_outbox(
                audit(rows[0] if rows else Policy(destination_id, found[1].workspace_id))
            )
        return rows
