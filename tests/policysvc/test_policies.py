"""Encryption policies through the gRPC API: the rules, versions, reads and previews."""

from __future__ import annotations

import asyncio
import json

import grpc
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from tests.conftest import StartService
from tests.policysvc.conftest import (
    PERSON,
    error_of,
    event_types,
    new_destination,
    new_workspace,
    outbox,
    status_of,
)

JWE = common_pb2.ENCRYPTION_FORMAT_JWE
SEGMENT = common_pb2.ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP


async def ready_destination(stub: PolicyServiceStub) -> str:
    """A cloud-mode destination in a HIPAA-eligible workspace."""
    return await new_destination(stub, await new_workspace(stub))


def enable(
    destination_id: str, fields: list[str], expected: int = 0, fmt: int = 0
) -> policy_pb2.EnableEncryptionRequest:
    return policy_pb2.EnableEncryptionRequest(
        destination_id=destination_id,
        fields=fields,
        expected_version=expected,
        format=fmt,  # type: ignore[arg-type]
    )


def update(
    destination_id: str,
    expected: int,
    add: tuple[str, ...] = (),
    remove: tuple[str, ...] = (),
) -> policy_pb2.UpdateEncryptedFieldsRequest:
    return policy_pb2.UpdateEncryptedFieldsRequest(
        destination_id=destination_id, add=add, remove=remove, expected_version=expected
    )


async def test_enable_creates_version_one(stub: PolicyServiceStub) -> None:
    """Enabling yellow fields makes version 1: enabled, canonical sorted fields, JWE default."""
    destination_id = await ready_destination(stub)
    reply = await stub.EnableEncryption(
        enable(destination_id, ["traits.email", 'context["traits"].phone']), metadata=PERSON
    )
    policy = reply.policy
    assert (policy.version, policy.enabled, policy.format, list(policy.fields)) == (
        1,
        True,
        JWE,
        ["context.traits.phone", "traits.email"],
    )
    assert (policy.created_by, policy.change_summary) == (
        "user-1",
        "enabled (jwe); added context.traits.phone, traits.email",
    )


async def test_enable_keeps_segment_format(stub: PolicyServiceStub) -> None:
    """ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP is stored and returned as chosen."""
    destination_id = await ready_destination(stub)
    reply = await stub.EnableEncryption(enable(destination_id, ["traits.email"], fmt=SEGMENT))
    fetched = await stub.GetPolicy(policy_pb2.GetPolicyRequest(destination_id=destination_id))
    assert (reply.policy.format, fetched.policy.format) == (SEGMENT, SEGMENT)


async def test_enable_refuses_unknown_format(stub: PolicyServiceStub) -> None:
    """A format number the contract does not know is INVALID_ARGUMENT."""
    destination_id = await ready_destination(stub)
    code = await status_of(stub.EnableEncryption(enable(destination_id, ["traits.email"], fmt=9)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_enable_in_non_eligible_workspace_fails(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """Encryption needs a HIPAA-eligible workspace: FAILED_PRECONDITION saying how to fix it."""
    destination_id = await new_destination(stub, await new_workspace(stub, eligible=False))
    before = await event_types(database_url)
    code, message = await error_of(stub.EnableEncryption(enable(destination_id, ["traits.email"])))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "SetHipaaEligibility" in message
    assert await event_types(database_url) == before


async def test_enable_on_wrong_destination_type_fails(stub: PolicyServiceStub) -> None:
    """Only event-stream cloud-mode destinations can have encryption."""
    workspace_id = await new_workspace(stub)
    destination_id = await new_destination(
        stub, workspace_id, type_=policy_pb2.DESTINATION_TYPE_WAREHOUSE
    )
    code, message = await error_of(stub.EnableEncryption(enable(destination_id, ["traits.email"])))
    assert (code, "cloud-mode" in message) == (grpc.StatusCode.FAILED_PRECONDITION, True)


async def test_enable_path_outside_the_three_objects_is_invalid(stub: PolicyServiceStub) -> None:
    """A path outside context, traits and properties is INVALID_ARGUMENT."""
    destination_id = await ready_destination(stub)
    code, message = await error_of(
        stub.EnableEncryption(enable(destination_id, ["integrations.email"]))
    )
    assert (code, "outside the encryptable objects" in message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        True,
    )


async def test_enable_malformed_path_is_invalid(stub: PolicyServiceStub) -> None:
    """A path that does not parse is INVALID_ARGUMENT."""
    destination_id = await ready_destination(stub)
    code = await status_of(stub.EnableEncryption(enable(destination_id, ["traits..email"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_enable_overlapping_paths_is_invalid(stub: PolicyServiceStub) -> None:
    """A path and a path inside it cannot both be selected."""
    destination_id = await ready_destination(stub)
    code = await status_of(
        stub.EnableEncryption(enable(destination_id, ["traits.address", "traits.address.city"]))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_enable_without_fields_is_invalid(stub: PolicyServiceStub) -> None:
    """EnableEncryption with no fields is INVALID_ARGUMENT."""
    destination_id = await ready_destination(stub)
    code = await status_of(stub.EnableEncryption(enable(destination_id, [])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_enable_red_field_fails_naming_it(stub: PolicyServiceStub) -> None:
    """A red field is FAILED_PRECONDITION naming it, its classification and the fix."""
    destination_id = await ready_destination(stub)
    code, message = await error_of(
        stub.EnableEncryption(enable(destination_id, ["traits.email", "traits.password"]))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "traits.password is red (default matcher 'password'" in message
    assert "SetClassification" in message
    assert "traits.email" not in message


async def test_enable_green_fields_fails_naming_each(stub: PolicyServiceStub) -> None:
    """Every non-yellow field is named, not only the first."""
    destination_id = await ready_destination(stub)
    code, message = await error_of(
        stub.EnableEncryption(enable(destination_id, ["traits.plan", "properties.clinic"]))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "traits.plan is green" in message
    assert "properties.clinic is green" in message


async def test_override_to_yellow_makes_a_field_selectable(stub: PolicyServiceStub) -> None:
    """After an override to yellow, a green field can be encrypted."""
    workspace_id = await new_workspace(stub)
    destination_id = await new_destination(stub, workspace_id)
    await stub.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id,
            override=policy_pb2.PathOverride(
                path="traits.plan", classification=policy_pb2.CLASSIFICATION_YELLOW
            ),
        )
    )
    reply = await stub.EnableEncryption(enable(destination_id, ["traits.plan"]))
    assert list(reply.policy.fields) == ["traits.plan"]


async def test_stale_expected_version_is_aborted(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """A change based on an old version is ABORTED and writes nothing."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    before = await event_types(database_url)
    code = await status_of(
        stub.UpdateEncryptedFields(update(destination_id, 0, add=("traits.birthdate",)))
    )
    assert (code, await event_types(database_url)) == (grpc.StatusCode.ABORTED, before)


async def test_enable_again_with_stale_version_is_aborted(stub: PolicyServiceStub) -> None:
    """EnableEncryption checks expected_version too."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    code = await status_of(stub.EnableEncryption(enable(destination_id, ["traits.name"])))
    assert code == grpc.StatusCode.ABORTED


async def test_concurrent_changes_on_one_version_one_wins(stub: PolicyServiceStub) -> None:
    """Of several changes based on the same version, exactly one succeeds; the rest ABORT."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    fields = ["traits.name", "traits.birthdate", "traits.gender", "traits.address", "context.ip"]
    codes = await asyncio.gather(
        *(
            status_of(stub.UpdateEncryptedFields(update(destination_id, 1, add=(field,))))
            for field in fields
        )
    )
    policy = (
        await stub.GetPolicy(policy_pb2.GetPolicyRequest(destination_id=destination_id))
    ).policy
    assert sorted(c.name for c in codes) == ["ABORTED"] * 4 + ["OK"]
    assert policy.version == 2


async def test_update_adds_and_removes(stub: PolicyServiceStub, database_url: str) -> None:
    """UpdateEncryptedFields makes a new version and audits what it added and removed."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email", "traits.name"]))
    reply = await stub.UpdateEncryptedFields(
        update(destination_id, 1, add=("traits.birthdate",), remove=("traits.name",))
    )
    event = (await outbox(database_url))[-1]
    assert (reply.policy.version, list(reply.policy.fields)) == (
        2,
        ["traits.birthdate", "traits.email"],
    )
    assert (event["event_type"], event["details"]) == (
        "Destination Encrypted Fields Modified",
        {
            "version": 2,
            "previous_version": 1,
            "added": ["traits.birthdate"],
            "removed": ["traits.name"],
        },
    )


async def test_update_adding_green_field_fails(stub: PolicyServiceStub) -> None:
    """Added fields must be yellow too."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    code = await status_of(
        stub.UpdateEncryptedFields(update(destination_id, 1, add=("traits.plan",)))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_update_removing_unknown_field_is_invalid(stub: PolicyServiceStub) -> None:
    """Removing a field the policy does not hold is INVALID_ARGUMENT."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    code = await status_of(
        stub.UpdateEncryptedFields(update(destination_id, 1, remove=("traits.name",)))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_update_removing_every_field_is_invalid(stub: PolicyServiceStub) -> None:
    """An update that would leave nothing to encrypt points at DisableEncryption."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    code, message = await error_of(
        stub.UpdateEncryptedFields(update(destination_id, 1, remove=("traits.email",)))
    )
    assert (code, "DisableEncryption" in message) == (grpc.StatusCode.INVALID_ARGUMENT, True)


async def test_update_of_disabled_policy_fails(stub: PolicyServiceStub) -> None:
    """UpdateEncryptedFields needs encryption enabled."""
    destination_id = await ready_destination(stub)
    code = await status_of(
        stub.UpdateEncryptedFields(update(destination_id, 0, add=("traits.email",)))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_disable_then_enable_continues_versions(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """Disable makes a version without fields; the next enable continues the sequence."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    disabled = await stub.DisableEncryption(
        policy_pb2.DisableEncryptionRequest(
            destination_id=destination_id,
            expected_version=1,
            confirm_destination_id=destination_id,
        )
    )
    again = await stub.EnableEncryption(enable(destination_id, ["traits.name"], expected=2))
    assert (disabled.policy.version, disabled.policy.enabled, list(disabled.policy.fields)) == (
        2,
        False,
        [],
    )
    assert (again.policy.version, again.policy.enabled) == (3, True)
    assert (await event_types(database_url))[-3:] == [
        "Destination Encryption Enabled",
        "Destination Encryption Disabled",
        "Destination Encryption Enabled",
    ]


async def test_disable_when_not_enabled_fails(stub: PolicyServiceStub) -> None:
    """Disabling a destination without encryption is FAILED_PRECONDITION."""
    destination_id = await ready_destination(stub)
    code = await status_of(
        stub.DisableEncryption(
            policy_pb2.DisableEncryptionRequest(
                destination_id=destination_id, confirm_destination_id=destination_id
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_change_of_unknown_destination_is_not_found(stub: PolicyServiceStub) -> None:
    """Policy changes on a destination that does not exist answer NOT_FOUND."""
    code = await status_of(
        stub.EnableEncryption(enable("dst_00000000000000000000", ["traits.email"]))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_enable_is_audited_with_paths_and_versions(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """EnableEncryption writes `Destination Encryption Enabled` with fields and versions."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]), metadata=PERSON)
    event = (await outbox(database_url))[-1]
    assert (event["event_type"], event["target"], event["actor_user_id"]) == (
        "Destination Encryption Enabled",
        destination_id,
        "user-1",
    )
    assert event["details"] == {
        "version": 1,
        "previous_version": 0,
        "fields": ["traits.email"],
        "added": ["traits.email"],
        "removed": [],
        "format": "jwe",
    }


async def test_get_policy_never_configured_is_version_zero(stub: PolicyServiceStub) -> None:
    """A destination without a policy answers version 0, disabled, no fields."""
    destination_id = await ready_destination(stub)
    reply = await stub.GetPolicy(policy_pb2.GetPolicyRequest(destination_id=destination_id))
    assert (reply.policy.version, reply.policy.enabled, list(reply.policy.fields)) == (0, False, [])


async def test_get_policy_of_unknown_destination_is_not_found(stub: PolicyServiceStub) -> None:
    """GetPolicy of a missing destination answers NOT_FOUND."""
    code = await status_of(
        stub.GetPolicy(policy_pb2.GetPolicyRequest(destination_id="dst_00000000000000000000"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_get_policy_by_a_person_is_audited(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """A person's GetPolicy writes `Destination Encryption Policy Viewed`."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    await stub.GetPolicy(
        policy_pb2.GetPolicyRequest(destination_id=destination_id), metadata=PERSON
    )
    event = (await outbox(database_url))[-1]
    assert (event["event_type"], event["actor_user_id"], event["details"]) == (
        "Destination Encryption Policy Viewed",
        "user-1",
        {"version": 1},
    )


async def test_get_policy_by_a_service_is_not_audited(
    start: StartService, database_url: str
) -> None:
    """A peer service (encryptsvc's hot path) reads policies without an audit row."""
    service = await start("policysvc")
    stub = PolicyServiceStub(service.channel())
    destination_id = await ready_destination(stub)
    before = await event_types(database_url)
    reply = await PolicyServiceStub(service.peer_channel("encryptsvc")).GetPolicy(
        policy_pb2.GetPolicyRequest(destination_id=destination_id)
    )
    assert (reply.policy.destination_id, await event_types(database_url)) == (
        destination_id,
        before,
    )


async def test_list_policy_versions_newest_first_in_pages(stub: PolicyServiceStub) -> None:
    """ListPolicyVersions pages through every version, newest first."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    await stub.UpdateEncryptedFields(update(destination_id, 1, add=("traits.name",)))
    await stub.DisableEncryption(
        policy_pb2.DisableEncryptionRequest(
            destination_id=destination_id,
            expected_version=2,
            confirm_destination_id=destination_id,
        )
    )
    seen: list[tuple[int, str]] = []
    token = ""
    while True:
        reply = await stub.ListPolicyVersions(
            policy_pb2.ListPolicyVersionsRequest(
                destination_id=destination_id,
                page=common_pb2.PageRequest(page_size=2, page_token=token),
            )
        )
        seen.extend((v.version, v.change_summary) for v in reply.versions)
        token = reply.next_page_token
        if not token:
            break
    assert seen == [
        (3, "disabled"),
        (2, "updated; added traits.name"),
        (1, "enabled (jwe); added traits.email"),
    ]


async def test_preview_names_encrypted_and_missing_paths(stub: PolicyServiceStub) -> None:
    """Preview resolves array elements to concrete paths and lists absent policy paths."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email", "properties.allergy[*]"]))
    samples = [
        json.dumps({"traits": {"email": "a@example.com"}, "properties": {"allergy": ["x", "y"]}}),
        json.dumps({"traits": {"name": "n"}}),
    ]
    reply = await stub.PreviewEncryption(
        policy_pb2.PreviewEncryptionRequest(destination_id=destination_id, sample_events=samples)
    )
    assert reply.policy_version == 1
    assert [(list(p.encrypted_paths), list(p.missing_paths)) for p in reply.previews] == [
        (["properties.allergy[0]", "properties.allergy[1]", "traits.email"], []),
        ([], ["properties.allergy[*]", "traits.email"]),
    ]
    assert "a@example.com" not in str(reply)


async def test_preview_malformed_sample_errors_only_that_sample(stub: PolicyServiceStub) -> None:
    """A malformed sample gets its own error; the others are previewed."""
    destination_id = await ready_destination(stub)
    reply = await stub.PreviewEncryption(
        policy_pb2.PreviewEncryptionRequest(
            destination_id=destination_id,
            sample_events=["{not json", "[1]", "{}"],
            proposed_fields=["traits.email"],
            use_proposed_fields=True,
        )
    )
    assert [p.error for p in reply.previews] == [
        "sample_events[0] is not valid JSON "
        "(unexpected character, expected a string key at byte 1)",
        "sample_events[1] is a JSON array, not an object; send one JSON object",
        "",
    ]
    assert list(reply.previews[2].missing_paths) == ["traits.email"]


async def test_preview_of_proposed_fields_reports_problems(stub: PolicyServiceStub) -> None:
    """Proposed fields that are not yellow are listed as problems, with version 0."""
    destination_id = await ready_destination(stub)
    reply = await stub.PreviewEncryption(
        policy_pb2.PreviewEncryptionRequest(
            destination_id=destination_id,
            sample_events=[json.dumps({"traits": {"plan": "gold"}})],
            proposed_fields=["traits.plan", "traits.email"],
            use_proposed_fields=True,
        )
    )
    assert reply.policy_version == 0
    assert [p.split(" (")[0] for p in reply.problems] == ["traits.plan is green"]
    assert list(reply.previews[0].encrypted_paths) == ["traits.plan"]


async def test_preview_of_unknown_destination_is_not_found(stub: PolicyServiceStub) -> None:
    """PreviewEncryption of a missing destination answers NOT_FOUND."""
    code = await status_of(
        stub.PreviewEncryption(
            policy_pb2.PreviewEncryptionRequest(destination_id="dst_00000000000000000000")
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_list_policy_versions_by_a_person_is_audited(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """A person's ListPolicyVersions is recorded as a policy view."""
    destination_id = await ready_destination(stub)
    await stub.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(destination_id=destination_id), metadata=PERSON
    )
    event = (await outbox(database_url))[-1]
    assert (event["event_type"], event["target"]) == (
        "Destination Encryption Policy Viewed",
        destination_id,
    )


async def test_disable_without_confirmation_changes_nothing(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """DisableEncryption without confirm_destination_id naming the destination is
    INVALID_ARGUMENT saying how to confirm; the policy stays enabled and nothing is audited."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    before = await event_types(database_url)
    missing = await error_of(
        stub.DisableEncryption(
            policy_pb2.DisableEncryptionRequest(destination_id=destination_id, expected_version=1)
        )
    )
    wrong = await error_of(
        stub.DisableEncryption(
            policy_pb2.DisableEncryptionRequest(
                destination_id=destination_id,
                expected_version=1,
                confirm_destination_id="ds_00000000000000000000",
            )
        )
    )
    policy = await stub.GetPolicy(policy_pb2.GetPolicyRequest(destination_id=destination_id))
    assert [code for code, _ in (missing, wrong)] == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    assert f"confirm_destination_id to {destination_id}" in missing[1]
    assert (policy.policy.enabled, policy.policy.version) == (True, 1)
    assert [t for t in await event_types(database_url) if t not in before] == [
        "Destination Encryption Policy Viewed"
    ]


async def test_disable_answer_says_sent_data_stays_encrypted(stub: PolicyServiceStub) -> None:
    """A confirmed DisableEncryption answers that data already sent stays encrypted."""
    destination_id = await ready_destination(stub)
    await stub.EnableEncryption(enable(destination_id, ["traits.email"]))
    reply = await stub.DisableEncryption(
        policy_pb2.DisableEncryptionRequest(
            destination_id=destination_id,
            expected_version=1,
            confirm_destination_id=destination_id,
        )
    )
    assert (reply.policy.enabled, "data already sent stays encrypted" in reply.notice) == (
        False,
        True,
    )
