"""The CatalogStore contract, run against the fake and the PostgreSQL store alike."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.policysvc.catalog import HipaaEligibility, Workspace
from tests.policysvc.backends import T0, Backend, backend, destination, entry, seed, workspace

__all__ = ["backend"]


async def test_a_workspace_reads_back_as_inserted_with_its_audit(backend: Backend) -> None:
    """insert_workspace stores the workspace and its audit entry; an unknown id is None."""
    await backend.catalog.insert_workspace(workspace(), entry("Workspace Created"))
    assert (
        await backend.catalog.get_workspace("ws_1"),
        await backend.catalog.get_workspace("ws_unknown"),
        await backend.outbox(),
    ) == (workspace(), None, ["Workspace Created"])


async def test_an_entry_auditsvc_would_refuse_fails_the_change(backend: Backend) -> None:
    """The outbox checks auditsvc's rules: the workspace is not created, nothing is queued."""
    with pytest.raises(InvalidArgument, match="past-tense verb"):
        await backend.catalog.insert_workspace(workspace(), entry("Create Workspace"))
    assert (await backend.catalog.get_workspace("ws_1"), await backend.outbox()) == (None, [])


async def test_update_hipaa_answers_the_workspace_before_the_change(backend: Backend) -> None:
    """The audit callback and the answer see the old eligibility; the store keeps the new."""
    await seed(backend)
    hipaa = HipaaEligibility(True, "BAA-1", "bob", T0)
    seen: list[Workspace] = []

    def audit(before: Workspace) -> object:
        seen.append(before)
        return entry("Workspace HIPAA Eligibility Modified")

    before = await backend.catalog.update_hipaa("ws_1", hipaa, audit)  # type: ignore[arg-type]
    assert (before, seen, await backend.catalog.get_workspace("ws_1")) == (
        workspace(),
        [workspace()],
        replace(workspace(), hipaa=hipaa),
    )


async def test_update_hipaa_of_an_unknown_workspace_is_none_and_unaudited(
    backend: Backend,
) -> None:
    """None, and no audit entry."""
    hipaa = HipaaEligibility(True, "BAA-1", "bob", T0)
    answer = await backend.catalog.update_hipaa("ws_x", hipaa, lambda w: entry("Never Written"))
    assert (answer, await backend.outbox()) == (None, [])


async def test_a_destination_in_an_unknown_workspace_is_not_found(backend: Backend) -> None:
    """The workspace must exist; nothing is audited."""
    with pytest.raises(NotFound, match="create it first"):
        await backend.catalog.insert_destination(destination(), entry("Destination Created"))
    assert await backend.outbox() == []


async def test_destination_names_are_unique_per_workspace(backend: Backend) -> None:
    """A second "Webhook" in ws_1 is AlreadyExists; in ws_2 it is fine."""
    await seed(
        backend, destination("dst_1", name="Webhook"), destination("dst_2", "ws_2", "Webhook")
    )
    with pytest.raises(AlreadyExists, match="choose another name"):
        await backend.catalog.insert_destination(
            destination("dst_3", name="Webhook"), entry("Destination Created")
        )
    assert await backend.catalog.get_destination("dst_2") == destination("dst_2", "ws_2", "Webhook")


async def test_destinations_list_in_creation_order_after_a_position(backend: Backend) -> None:
    """Oldest first, only the workspace's, resuming after the position given, at most limit."""
    await seed(
        backend,
        destination("dst_b"),
        destination("dst_other", "ws_2"),
        destination("dst_a"),
        destination("dst_c"),
    )
    first = await backend.catalog.list_destinations("ws_1", 0, 2)
    rest = await backend.catalog.list_destinations("ws_1", first[-1][0], 10)
    assert ([d.destination_id for _, d in first], [d.destination_id for _, d in rest]) == (
        ["dst_b", "dst_a"],
        ["dst_c"],
    )
