"""The PrivacyStore contract, run against the fake and the PostgreSQL store alike."""

from __future__ import annotations

import asyncio

import pytest

from services.common.audit import AuditEntry
from services.common.errors import ResourceExhausted
from services.policysvc.classification import (
    Classification,
    Matcher,
    MatcherTarget,
    MatchKind,
    Override,
    Signals,
)
from services.policysvc.policy import Decide, Policy, PolicyChange, PolicyContext
from tests.policysvc.backends import (
    T0,
    Backend,
    allow,
    backend,
    destination,
    entry,
    refuse_past,
    seed,
)

__all__ = ["backend"]


def matcher(matcher_id: str, pattern: str = "email") -> Matcher:
    return Matcher(
        matcher_id,
        f"name {matcher_id}",
        MatcherTarget.VALUE,
        MatchKind.EXACT,
        pattern,
        Classification.RED,
        created_at=T0,
        created_by="alice",
    )


async def known(backend: Backend, workspace_id: str) -> set[str]:
    """Every known path of the workspace: one page as large as the store holds."""
    page, more = await backend.privacy.known_page(workspace_id, (), 0, 1_000_000)
    assert not more
    return set(page)


def override(path: str, classification: Classification) -> Override:
    return Override(path, classification, "alice", T0)


def stores(policy: Policy) -> Decide:
    async def decide(ctx: PolicyContext) -> PolicyChange:
        return PolicyChange(policy, entry("Policy Enabled"))

    return decide


async def test_workspace_exists_only_once_inserted(backend: Backend) -> None:
    """False before, True after."""
    before = await backend.privacy.workspace_exists("ws_1")
    await seed(backend)
    assert (before, await backend.privacy.workspace_exists("ws_1")) == (False, True)


async def test_an_override_is_set_replaced_and_removed(backend: Backend) -> None:
    """The audit callback sees the previous override's classification each time."""
    await seed(backend)
    previous: list[Classification | None] = []

    def audit(before: Classification | None) -> object:
        previous.append(before)
        return entry("Privacy Classification Modified")

    for value in (
        override("traits.x", Classification.RED),
        override("traits.x", Classification.YELLOW),
        None,
    ):
        assert await backend.privacy.set_override("ws_1", "traits.x", value, audit, allow)  # type: ignore[arg-type]
        state = await backend.privacy.classifier_state("ws_1", ["traits.x"])
        previous.append(state.overrides[0].classification if state.overrides else None)
    assert previous == [
        None,
        Classification.RED,
        Classification.RED,
        Classification.YELLOW,
        Classification.YELLOW,
        None,
    ]


async def test_an_override_in_an_unknown_workspace_is_refused_unaudited(backend: Backend) -> None:
    """False, and nothing in the outbox."""
    value = override("traits.x", Classification.RED)
    counts: list[int] = []
    done = await backend.privacy.set_override(
        "ws_x", "traits.x", value, lambda _: entry("Never"), counts.append
    )
    assert (done, counts, await backend.outbox()) == (False, [], [])


async def test_add_matcher_checks_the_count_and_keeps_order(backend: Backend) -> None:
    """check() sees how many custom matchers exist; matchers read back in insertion order."""
    await seed(backend)
    counts: list[int] = []
    for matcher_id in ("mt_b", "mt_a"):
        added = await backend.privacy.add_matcher(
            "ws_1", matcher(matcher_id), counts.append, entry("Privacy Matcher Added")
        )
        assert added
    state = await backend.privacy.classifier_state("ws_1")
    assert (counts, [m.matcher_id for m in state.matchers], state.matchers[0]) == (
        [0, 1],
        ["mt_b", "mt_a"],
        matcher("mt_b"),
    )


async def test_a_refusing_check_adds_nothing(backend: Backend) -> None:
    """The check's error propagates; no matcher, no audit entry."""
    await seed(backend)

    def full(count: int) -> None:
        raise ResourceExhausted("full")

    with pytest.raises(ResourceExhausted):
        await backend.privacy.add_matcher("ws_1", matcher("mt_1"), full, entry("Never"))
    state = await backend.privacy.classifier_state("ws_1")
    assert (state.matchers, await backend.outbox()) == ([], ["Workspace Created"])


async def test_remove_matcher_answers_it_and_forgets_its_value_matches(backend: Backend) -> None:
    """The removed matcher comes back; its recorded value hits go with it."""
    await seed(backend)
    await backend.privacy.add_matcher(
        "ws_1", matcher("mt_1"), lambda _: None, entry("Matcher Added")
    )
    await backend.privacy.record_samples(
        "ws_1", ["traits.a"], {"traits.a": frozenset({"mt_1"})}, allow
    )
    hits_before = (await backend.privacy.classifier_state("ws_1", ["traits.a"])).value_hits
    removed = await backend.privacy.remove_matcher(
        "ws_1", "mt_1", lambda m: entry("Matcher Removed")
    )
    state = await backend.privacy.classifier_state("ws_1", ["traits.a"])
    assert (hits_before, removed, state.matchers, state.value_hits) == (
        {"traits.a": frozenset({"mt_1"})},
        matcher("mt_1"),
        [],
        {},
    )


async def test_remove_matcher_of_another_workspace_is_none(backend: Backend) -> None:
    """A matcher id from ws_2 is not found through ws_1, and stays."""
    await seed(backend, destination("dst_2", "ws_2"))
    await backend.privacy.add_matcher(
        "ws_2", matcher("mt_2"), lambda _: None, entry("Matcher Added")
    )
    removed = await backend.privacy.remove_matcher("ws_1", "mt_2", lambda m: entry("Never"))
    state = await backend.privacy.classifier_state("ws_2")
    assert (removed, [m.matcher_id for m in state.matchers]) == (None, ["mt_2"])


async def test_value_hits_are_kept_only_for_the_workspaces_own_matchers(backend: Backend) -> None:
    """A hit naming an unknown (or removed) matcher records nothing."""
    await seed(backend)
    await backend.privacy.add_matcher(
        "ws_1", matcher("mt_1"), lambda _: None, entry("Matcher Added")
    )
    await backend.privacy.record_samples(
        "ws_1",
        ["traits.a", "traits.b"],
        {"traits.a": frozenset({"mt_1", "mt_gone"}), "traits.b": frozenset({"mt_gone"})},
        allow,
    )
    state = await backend.privacy.classifier_state("ws_1", ["traits.a", "traits.b"])
    assert state.value_hits == {"traits.a": frozenset({"mt_1"})}


async def test_known_paths_are_samples_overrides_and_current_policy_fields(
    backend: Backend,
) -> None:
    """Sampled paths, overridden paths and the fields of each destination's newest policy
    version are known; an older version's fields and another workspace's paths are not."""
    await seed(backend, destination("dst_1"), destination("dst_2", "ws_2"))
    await backend.privacy.record_samples("ws_1", ["traits.sampled"], {}, allow)
    await backend.privacy.record_samples("ws_2", ["traits.elsewhere"], {}, allow)
    await backend.privacy.set_override(
        "ws_1",
        "traits.overridden",
        override("traits.overridden", Classification.YELLOW),
        lambda _: entry("Privacy Classification Modified"),
        allow,
    )
    for version, fields in ((1, ("traits.old",)), (2, ("traits.current",))):
        policy = Policy("dst_1", "ws_1", version, True, fields=fields, created_at=T0)
        await backend.policy.change_policy("dst_1", stores(policy))
    assert await known(backend, "ws_1") == {
        "traits.sampled",
        "traits.overridden",
        "traits.current",
    }


async def test_sample_signals_and_the_samples_audit_are_kept(backend: Backend) -> None:
    """What samples showed at a path (detectors, JSON kinds) reads back merged per path; the
    audit entry given is written with them."""
    await seed(backend)
    await backend.privacy.record_samples(
        "ws_1",
        ["traits.a"],
        {},
        allow,
        {"traits.a": Signals(frozenset(), frozenset({"string"}))},
        entry("Privacy Samples Classified"),
    )
    await backend.privacy.record_samples(
        "ws_1", ["traits.a"], {}, allow, {"traits.a": Signals(frozenset(), frozenset({"number"}))}
    )
    state = await backend.privacy.classifier_state("ws_1", ["traits.a"])
    assert (state.signals, (await backend.outbox())[-1]) == (
        {"traits.a": Signals(frozenset(), frozenset({"number", "string"}))},
        "Privacy Samples Classified",
    )


async def test_record_samples_checks_the_workspaces_path_count_with_the_new_paths(
    backend: Backend,
) -> None:
    """check() sees the workspace's distinct sampled paths after these are added (a path seen
    before counts once; another workspace's do not count)."""
    await seed(backend, destination("dst_2", "ws_2"))
    counts: list[int] = []
    for workspace_id, paths in (
        ("ws_1", ["traits.a", "traits.b"]),
        ("ws_1", ["traits.b", "traits.c"]),
        ("ws_2", ["traits.a"]),
        ("ws_1", []),
    ):
        await backend.privacy.record_samples(workspace_id, paths, {}, counts.append)
    assert counts == [2, 3, 1, 3]


async def test_a_refused_path_count_keeps_nothing_of_the_samples(backend: Backend) -> None:
    """Raising in check() rolls back the paths, value hits, signals and the audit entry."""
    await seed(backend)
    await backend.privacy.add_matcher(
        "ws_1", matcher("mt_1"), allow, entry("Privacy Matcher Added")
    )
    await backend.privacy.record_samples("ws_1", ["traits.a"], {}, allow)
    before = (
        await known(backend, "ws_1"),
        await backend.privacy.classifier_state("ws_1", ["traits.a", "traits.b", "traits.c"]),
        await backend.outbox(),
    )
    with pytest.raises(ResourceExhausted):
        await backend.privacy.record_samples(
            "ws_1",
            ["traits.b", "traits.c"],
            {"traits.b": frozenset({"mt_1"})},
            refuse_past(2),
            {"traits.c": Signals(frozenset(), frozenset({"string"}))},
            entry("Privacy Sample Events Classified"),
        )
    assert (
        await known(backend, "ws_1"),
        await backend.privacy.classifier_state("ws_1", ["traits.a", "traits.b", "traits.c"]),
        await backend.outbox(),
    ) == before


async def test_the_path_cap_holds_for_concurrent_recorders(backend: Backend) -> None:
    """Two recorders of two new paths each under a cap of three: one is refused, and the
    workspace keeps the other's two paths (recorders of one workspace take turns)."""
    await seed(backend)
    outcomes = await asyncio.gather(
        backend.privacy.record_samples("ws_1", ["traits.a", "traits.b"], {}, refuse_past(3)),
        backend.privacy.record_samples("ws_1", ["traits.c", "traits.d"], {}, refuse_past(3)),
        return_exceptions=True,
    )
    kept = await known(backend, "ws_1")
    assert (
        sorted(type(o).__name__ for o in outcomes),
        kept in ({"traits.a", "traits.b"}, {"traits.c", "traits.d"}),
    ) == (["NoneType", "ResourceExhausted"], True)


async def test_set_override_checks_the_count_only_when_one_is_added(backend: Backend) -> None:
    """check() sees the workspace's override count with the new one; replacing or removing an
    override is not checked."""
    await seed(backend)
    counts: list[int] = []
    for path, value in (
        ("traits.x", Classification.RED),
        ("traits.y", Classification.RED),
        ("traits.x", Classification.YELLOW),
        ("traits.y", None),
        ("traits.z", Classification.GREEN),
    ):
        await backend.privacy.set_override(
            "ws_1",
            path,
            None if value is None else override(path, value),
            lambda _: entry("Privacy Classification Modified"),
            counts.append,
        )
    assert counts == [1, 2, 2]


def audited(previous: Classification | None) -> AuditEntry:
    return entry("Privacy Classification Modified")


async def test_a_refused_override_count_keeps_nothing(backend: Backend) -> None:
    """At the cap a new path is refused with neither override nor audit entry; the paths
    already overridden can still be changed."""
    await seed(backend)
    at_cap = refuse_past(1)
    await backend.privacy.set_override(
        "ws_1", "traits.x", override("traits.x", Classification.RED), audited, at_cap
    )
    with pytest.raises(ResourceExhausted):
        await backend.privacy.set_override(
            "ws_1", "traits.y", override("traits.y", Classification.RED), audited, at_cap
        )
    await backend.privacy.set_override(
        "ws_1", "traits.x", override("traits.x", Classification.YELLOW), audited, at_cap
    )
    state = await backend.privacy.classifier_state("ws_1", ["traits.x"])
    assert (
        [(o.path, o.classification) for o in state.overrides],
        await backend.outbox(),
    ) == (
        [("traits.x", Classification.YELLOW)],
        ["Workspace Created", "Privacy Classification Modified", "Privacy Classification Modified"],
    )


async def test_the_classifier_state_holds_evidence_at_the_asked_paths_only(
    backend: Backend,
) -> None:
    """Matchers always; overrides, value hits and signals at the paths asked for and no others
    (a workspace may store 20,000 paths: a request reads what it classifies, not the store)."""
    await seed(backend)
    await backend.privacy.add_matcher(
        "ws_1", matcher("mt_1"), lambda _: None, entry("Matcher Added")
    )
    for path in ("traits.a", "traits.b"):
        await backend.privacy.set_override(
            "ws_1",
            path,
            override(path, Classification.YELLOW),
            lambda _: entry("Privacy Classification Modified"),
            allow,
        )
        await backend.privacy.record_samples(
            "ws_1",
            [path],
            {path: frozenset({"mt_1"})},
            allow,
            {path: Signals(frozenset(), frozenset({"string"}))},
        )
    asked = await backend.privacy.classifier_state("ws_1", ["traits.b", "traits.none"])
    nothing = await backend.privacy.classifier_state("ws_1")
    assert (
        [m.matcher_id for m in asked.matchers],
        [o.path for o in asked.overrides],
        set(asked.value_hits),
        set(asked.signals),
    ) == (["mt_1"], ["traits.b"], {"traits.b"}, {"traits.b"})
    assert (
        [m.matcher_id for m in nothing.matchers],
        nothing.overrides,
        nothing.value_hits,
        nothing.signals,
    ) == (["mt_1"], [], {}, {})


async def test_known_pages_are_in_code_point_order_with_the_requests_own_paths(
    backend: Backend,
) -> None:
    """Pages of the known paths and the extra ones, sorted as Python sorts str (code points,
    not a locale's collation), each path once, with whether more follow."""
    await seed(backend)
    stored = ["traits.b", "traits.Z", "traits.é", "traits.a_1"]
    await backend.privacy.record_samples("ws_1", stored, {}, allow)
    extra = {"traits.b", "properties.x", "traits.\U0001f600"}
    everything = sorted(set(stored) | extra)
    pages = [await backend.privacy.known_page("ws_1", extra, after, 4) for after in (0, 4, 8)]
    assert (len(everything), pages) == (
        6,
        [(everything[0:4], True), (everything[4:], False), ([], False)],
    )
