"""Policy rules at the domain level, on the in-memory stores: yellow-only selection,
expected_version, overlapping paths, eligibility. No gRPC, no PostgreSQL."""

from __future__ import annotations

import math

import pytest

from phiseal_dev.testing import ManualClock
from services.common.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from services.common.offload import Offload
from services.common.security.auth import Caller, Principal, Role
from services.common.vocabulary import EncryptionFormat
from services.policysvc.catalog import DestinationType, HipaaEligibility, Workspace
from services.policysvc.classification import Classification, Override
from services.policysvc.policy import Policies
from tests.policysvc.backends import T0, destination
from tests.policysvc.fakes import FakePolicyDatabase

JWE = EncryptionFormat.JWE
# Admin of both workspaces: the role checks have their own tests (test_authorization.py).
ADMIN = Caller(
    Principal("admin-1", memberships={ws: frozenset({Role.ADMIN}) for ws in ("ws_1", "ws_2")}),
    "req-1",
)


@pytest.fixture
def db() -> FakePolicyDatabase:
    """ws_1, HIPAA eligible, with the cloud-mode destination dst_1 and the warehouse dst_wh."""
    db = FakePolicyDatabase()
    db.workspaces["ws_1"] = Workspace(
        "ws_1", "Clinic", T0, "alice", HipaaEligibility(True, "BAA-1", "alice", T0)
    )
    db.workspaces["ws_2"] = Workspace("ws_2", "Not eligible", T0, "alice")
    for seq, made in enumerate(
        [
            destination("dst_1"),
            destination("dst_wh", type_=DestinationType.WAREHOUSE),
            destination("dst_2", "ws_2"),
        ],
        start=1,
    ):
        db.destinations[made.destination_id] = (seq, made)
    return db


@pytest.fixture
def policies(db: FakePolicyDatabase) -> Policies:
    # Every analysis step inline: these rules do not need the worker process.
    return Policies(db.policy(), Offload("policysvc", inline_below_us=math.inf), ManualClock(T0))


def untouched(db: FakePolicyDatabase) -> tuple[dict[str, object], list[object], list[object]]:
    """What a refused change must leave as it was: versions, outbox, announcements."""
    return ({d: list(v) for d, v in db.policies.items()}, list(db.outbox), list(db.announced))


NOTHING: tuple[dict[str, object], list[object], list[object]] = ({}, [], [])


async def test_yellow_fields_can_be_encrypted(policies: Policies) -> None:
    """traits.email (yellow by default) is enabled as version 1."""
    policy = await policies.enable(ADMIN, "dst_1", ["traits.email"], JWE, 0)
    assert (policy.version, policy.enabled, policy.fields) == (1, True, ("traits.email",))


async def test_a_red_field_is_refused_naming_it(policies: Policies, db: FakePolicyDatabase) -> None:
    """traits.password is red: FAILED_PRECONDITION names the path and how to reclassify it."""
    with pytest.raises(FailedPrecondition, match=r"traits\.password is red") as refused:
        await policies.enable(ADMIN, "dst_1", ["traits.email", "traits.password"], JWE, 0)
    assert ("SetClassification" in refused.value.message, untouched(db)) == (True, NOTHING)


async def test_every_green_field_is_named(policies: Policies, db: FakePolicyDatabase) -> None:
    """Unmatched paths are green: each is named, not only the first; nothing is written."""
    with pytest.raises(FailedPrecondition) as refused:
        await policies.enable(ADMIN, "dst_1", ["traits.plan", "properties.clinic"], JWE, 0)
    message = refused.value.message
    assert (
        "traits.plan is green" in message,
        "properties.clinic is green" in message,
        untouched(db),
    ) == (True, True, NOTHING)


async def test_an_override_to_yellow_makes_a_field_selectable(
    policies: Policies, db: FakePolicyDatabase
) -> None:
    """The workspace's override decides over the default: a green path overridden yellow."""
    db.overrides[("ws_1", "traits.plan")] = Override(
        "traits.plan", Classification.YELLOW, "alice", T0
    )
    policy = await policies.enable(ADMIN, "dst_1", ["traits.plan"], JWE, 0)
    assert policy.fields == ("traits.plan",)


async def test_update_checks_only_the_added_fields(
    policies: Policies, db: FakePolicyDatabase
) -> None:
    """A field that turned red after it was enabled may stay, or be removed; a red one may
    not be added."""
    await policies.enable(ADMIN, "dst_1", ["traits.email", "traits.phone"], JWE, 0)
    db.overrides[("ws_1", "traits.phone")] = Override(
        "traits.phone", Classification.RED, "alice", T0
    )
    with pytest.raises(FailedPrecondition, match=r"traits\.plan is green"):
        await policies.update(ADMIN, "dst_1", ["traits.plan"], [], 1)
    updated = await policies.update(ADMIN, "dst_1", ["traits.city"], ["traits.email"], 1)
    assert updated.fields == ("traits.city", "traits.phone")


async def test_a_stale_expected_version_is_aborted(policies: Policies) -> None:
    """A change based on version 0 after version 1 exists is ABORTED, naming both versions."""
    await policies.enable(ADMIN, "dst_1", ["traits.email"], JWE, 0)
    with pytest.raises(Aborted, match="at version 1, not the expected 0"):
        await policies.enable(ADMIN, "dst_1", ["traits.phone"], JWE, 0)


async def test_a_stale_update_or_disable_is_aborted_and_changes_nothing(
    policies: Policies, db: FakePolicyDatabase
) -> None:
    """Update and disable check expected_version too; the policy stays at version 2."""
    await policies.enable(ADMIN, "dst_1", ["traits.email"], JWE, 0)
    await policies.update(ADMIN, "dst_1", ["traits.phone"], [], 1)
    before = untouched(db)
    with pytest.raises(Aborted):
        await policies.update(ADMIN, "dst_1", ["traits.city"], [], 1)
    with pytest.raises(Aborted):
        await policies.disable(ADMIN, "dst_1", 1, "dst_1")
    assert untouched(db) == before


async def test_the_expected_version_continues_through_disable(policies: Policies) -> None:
    """Enable (1), disable (2), enable based on 2 (3): versions never restart."""
    await policies.enable(ADMIN, "dst_1", ["traits.email"], JWE, 0)
    await policies.disable(ADMIN, "dst_1", 1, "dst_1")
    again = await policies.enable(ADMIN, "dst_1", ["traits.email"], JWE, 2)
    assert (again.version, again.enabled) == (3, True)


async def test_overlapping_paths_are_invalid(policies: Policies, db: FakePolicyDatabase) -> None:
    """traits.address contains traits.address.city: select only one of them."""
    with pytest.raises(InvalidArgument, match="overlap"):
        await policies.enable(ADMIN, "dst_1", ["traits.address", "traits.address.city"], JWE, 0)
    assert untouched(db) == NOTHING


async def test_an_added_path_overlapping_a_selected_one_is_invalid(policies: Policies) -> None:
    """Adding traits.address.city to a policy holding traits.address is refused."""
    await policies.enable(ADMIN, "dst_1", ["traits.address"], JWE, 0)
    with pytest.raises(InvalidArgument, match="overlap"):
        await policies.update(ADMIN, "dst_1", ["traits.address.city"], [], 1)


async def test_a_workspace_without_hipaa_eligibility_cannot_encrypt(
    policies: Policies, db: FakePolicyDatabase
) -> None:
    """FAILED_PRECONDITION pointing at SetHipaaEligibility; nothing is written."""
    with pytest.raises(FailedPrecondition, match="SetHipaaEligibility"):
        await policies.enable(ADMIN, "dst_2", ["traits.email"], JWE, 0)
    assert untouched(db) == NOTHING


async def test_only_cloud_mode_destinations_can_encrypt(
    policies: Policies, db: FakePolicyDatabase
) -> None:
    """A warehouse destination is refused, naming its type; nothing is written."""
    with pytest.raises(FailedPrecondition, match="of type warehouse"):
        await policies.enable(ADMIN, "dst_wh", ["traits.email"], JWE, 0)
    assert untouched(db) == NOTHING


async def test_an_unknown_destination_is_not_found_before_its_fields_are_read(
    policies: Policies, db: FakePolicyDatabase
) -> None:
    """The destination is resolved (and the caller authorized) first: NOT_FOUND, not the
    invalid path's INVALID_ARGUMENT."""
    with pytest.raises(NotFound, match="dst_x"):
        await policies.enable(ADMIN, "dst_x", ["traits..bad"], JWE, 0)
    assert untouched(db) == NOTHING


async def test_an_accepted_change_is_stored_audited_and_announced(
    policies: Policies, db: FakePolicyDatabase
) -> None:
    """One version, one audit entry with the paths and versions, one announcement."""
    await policies.enable(ADMIN, "dst_1", ["traits.email"], JWE, 0)
    (audit,) = db.outbox
    assert (audit.event_type, audit.details["fields"], db.announced) == (
        "Destination Encryption Enabled",
        ["traits.email"],
        [("dst_1", 1)],
    )
