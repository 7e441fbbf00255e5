"""The PolicyStore contract, run against the fake and the PostgreSQL store alike."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.fieldpath import parse
from services.policysvc.classification import Classification, Override
from services.policysvc.policy import Decide, Policy, PolicyChange, PolicyContext
from tests.policysvc.backends import (
    T0,
    Backend,
    allow,
    backend,
    destination,
    entry,
    seed,
    workspace,
)

__all__ = ["backend"]


def next_version(ctx: PolicyContext, *fields: str) -> PolicyChange:
    """A decision that appends the version after the head with ``fields``."""
    policy = Policy(
        ctx.destination.destination_id,
        ctx.workspace.workspace_id,
        ctx.head.version + 1,
        enabled=bool(fields),
        fields=fields,
        created_at=T0,
        created_by="alice",
        change_summary="changed",
    )
    return PolicyChange(policy, entry("Destination Encryption Enabled"))


def to(*fields: str) -> Decide:
    """An (async) decision that appends the version after the head with ``fields``."""

    async def decide(ctx: PolicyContext) -> PolicyChange:
        return next_version(ctx, *fields)

    return decide


async def test_a_change_is_stored_audited_and_announced(backend: Backend) -> None:
    """change_policy answers and keeps decide's policy, its audit entry and an announcement."""
    await seed(backend, destination())
    stored = await backend.policy.change_policy("dst_1", to("traits.a"))
    assert (
        stored,
        await backend.policy.get_policy("dst_1", None),
        (await backend.outbox())[-1],
        await backend.announced(1),
    ) == (
        Policy(
            "dst_1",
            "ws_1",
            1,
            True,
            fields=("traits.a",),
            created_at=T0,
            created_by="alice",
            change_summary="changed",
        ),
        stored,
        "Destination Encryption Enabled",
        [("dst_1", 1)],
    )


async def test_a_change_to_an_unknown_destination_is_none_without_deciding(
    backend: Backend,
) -> None:
    """None; decide is never called."""
    called: list[PolicyContext] = []

    async def decide(ctx: PolicyContext) -> PolicyChange:
        called.append(ctx)
        return next_version(ctx)

    assert (await backend.policy.change_policy("dst_x", decide), called) == (None, [])


async def test_a_refusing_decision_writes_nothing(backend: Backend) -> None:
    """decide's error propagates; no version, no audit entry, no announcement."""
    await seed(backend, destination())

    async def refuse(ctx: PolicyContext) -> PolicyChange:
        raise FailedPrecondition("no")

    with pytest.raises(FailedPrecondition):
        await backend.policy.change_policy("dst_1", refuse)
    await backend.policy.change_policy("dst_1", to("traits.a"))
    assert (
        await backend.policy.list_versions("dst_1", 1 << 62, 10, None),
        await backend.announced(1),
    ) == (
        [await backend.policy.get_policy("dst_1", None)],
        [("dst_1", 1)],
    )


async def test_the_context_holds_workspace_destination_head_and_classifier(
    backend: Backend,
) -> None:
    """Before any change the head is version 0; the classifier sees the workspace overrides."""
    await seed(backend, destination())
    await backend.privacy.set_override(
        "ws_1",
        "traits.plan",
        Override("traits.plan", Classification.YELLOW, "alice", T0),
        lambda _: entry("Privacy Classification Modified"),
        allow,
    )
    ctx = await backend.policy.load_context("dst_1", lambda head: ["traits.plan"])
    assert ctx is not None
    assert (
        ctx.workspace,
        ctx.destination,
        ctx.head,
        ctx.classifier_state.classifier().classify(parse("traits.plan")).classification,
        await backend.policy.load_context("dst_x"),
    ) == (workspace(), destination(), Policy("dst_1", "ws_1"), Classification.YELLOW, None)


async def test_get_policy_of_a_never_configured_destination_is_version_zero(
    backend: Backend,
) -> None:
    """Version 0 in the destination's workspace; the audit callback sees it; unknown is None."""
    await seed(backend, destination())
    seen: list[Policy] = []

    def audit(policy: Policy) -> object:
        seen.append(policy)
        return entry("Destination Encryption Policy Viewed")

    policy = await backend.policy.get_policy("dst_1", audit)  # type: ignore[arg-type]
    assert (policy, seen, await backend.policy.get_policy("dst_x", None)) == (
        Policy("dst_1", "ws_1"),
        [Policy("dst_1", "ws_1")],
        None,
    )


async def test_versions_list_newest_first_below_a_version(backend: Backend) -> None:
    """Newest first, strictly below ``before``, at most ``limit``."""
    await seed(backend, destination())
    for n in range(4):
        await backend.policy.change_policy("dst_1", to(f"traits.f{n}"))
    page = await backend.policy.list_versions("dst_1", 4, 2, None)
    assert [p.version for p in page or []] == [3, 2]


async def test_concurrent_changes_are_decided_one_after_the_other(backend: Backend) -> None:
    """Both decisions run under the destination's lock: the second sees the first's version."""
    await seed(backend, destination())
    results = await asyncio.gather(
        backend.policy.change_policy("dst_1", to("traits.a")),
        backend.policy.change_policy("dst_1", to("traits.b")),
    )
    assert sorted(p.version for p in results if p) == [1, 2]


async def test_a_decision_awaiting_keeps_the_lock(backend: Backend) -> None:
    """While one decision awaits (the domain offloads its analysis), a second change waits:
    it decides on the first one's version, never on the same head."""
    await seed(backend, destination())
    deciding, release = asyncio.Event(), asyncio.Event()
    heads: list[int] = []

    async def slow(ctx: PolicyContext) -> PolicyChange:
        heads.append(ctx.head.version)
        deciding.set()
        await release.wait()
        return next_version(ctx, "traits.a")

    async def quick(ctx: PolicyContext) -> PolicyChange:
        heads.append(ctx.head.version)
        return next_version(ctx, "traits.b")

    first = asyncio.create_task(backend.policy.change_policy("dst_1", slow))
    await deciding.wait()
    second = asyncio.create_task(backend.policy.change_policy("dst_1", quick))
    release.set()
    done = await asyncio.gather(first, second)
    assert ([p.fields if p else None for p in done], heads) == (
        [("traits.a",), ("traits.b",)],
        [0, 1],
    )


async def test_an_audit_entry_the_outbox_refuses_keeps_no_version(backend: Backend) -> None:
    """The entry is checked as auditsvc would: refused, the version and announcement go too."""
    await seed(backend, destination())

    async def unauditable(ctx: PolicyContext) -> PolicyChange:
        return PolicyChange(next_version(ctx, "traits.a").policy, entry("Enable Encryption"))

    with pytest.raises(InvalidArgument, match="past-tense verb"):
        await backend.policy.change_policy("dst_1", unauditable)
    await backend.policy.change_policy("dst_1", to("traits.b"))
    versions = await backend.policy.list_versions("dst_1", 1 << 62, 10, None)
    assert ([(p.version, p.fields) for p in versions or []], await backend.announced(1)) == (
        [(1, ("traits.b",))],
        [("dst_1", 1)],
    )


async def test_workspace_of_names_the_destinations_workspace(backend: Backend) -> None:
    """Enough to authorize before anything is parsed; an unknown destination is None."""
    await seed(backend, destination("dst_1"), destination("dst_2", "ws_2"))
    assert (
        await backend.policy.workspace_of("dst_1"),
        await backend.policy.workspace_of("dst_2"),
        await backend.policy.workspace_of("dst_x"),
    ) == ("ws_1", "ws_2", None)


async def test_record_audit_writes_the_entry(backend: Backend) -> None:
    """An audit entry recorded on its own reaches the outbox."""
    await backend.policy.record_audit(entry("Destination Encryption Previewed"))
    assert await backend.outbox() == ["Destination Encryption Previewed"]


async def test_a_change_reads_the_evidence_at_the_paths_it_concerns_only(
    backend: Backend,
) -> None:
    """decide sees the overrides at concerning(head) and no others; concerning is given the
    head read under the lock."""
    await seed(backend, destination())
    for path in ("traits.a", "traits.b"):
        await backend.privacy.set_override(
            "ws_1",
            path,
            Override(path, Classification.YELLOW, "alice", T0),
            lambda _: entry("Privacy Classification Modified"),
            allow,
        )
    await backend.policy.change_policy("dst_1", to("traits.b"))
    seen: list[tuple[int, list[str]]] = []

    async def decide(ctx: PolicyContext) -> PolicyChange:
        seen.append((ctx.head.version, [o.path for o in ctx.classifier_state.overrides]))
        return next_version(ctx, "traits.a")

    await backend.policy.change_policy("dst_1", decide, lambda head: head.fields)
    preview = await backend.policy.load_context("dst_1", lambda head: ["traits.b"])
    assert preview is not None
    assert (seen, [o.path for o in preview.classifier_state.overrides]) == (
        [(1, ["traits.b"])],
        ["traits.b"],
    )
