"""Hostile input on the real services: unknown enum values, undecodable bytes, oversized and
deeply nested samples and details get INVALID_ARGUMENT (never INTERNAL or UNKNOWN), and the
service stays healthy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_dev.testing import RunningService
from tests.auditsvc.helpers import event
from tests.conftest import StartService

UNKNOWN = 99  # proto3 enums are open: an unknown number arrives as itself
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    if isinstance(result, audit_pb2.RecordEventsResponse) and result.rejected:
        # RecordEvents refuses per entry (issue 13): the batch answers OK, naming each refusal.
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.OK


async def serving(service: RunningService) -> bool:
    channel = service.plaintext_channel(service.health_address)
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_unknown_enum_values_are_invalid_arguments(
    start: StartService, tmp_path: Path
) -> None:
    """Every enum field of every request refuses a number it does not know."""
    unknown: Any = UNKNOWN  # the stubs' types would refuse it; the wire does not
    policy_service = await start("policysvc")
    keys_service = await start("keysvc", POLICYSVC_ADDR=policy_service.peer_address)
    audit_service = await start("auditsvc", AUDITSVC_SIGNING_KEY_FILE=str(tmp_path / "k.pem"))
    policy = policy_pb2_grpc.PolicyServiceStub(policy_service.channel())
    keys = keys_pb2_grpc.KeyServiceStub(keys_service.channel())
    audit = audit_pb2_grpc.AuditServiceStub(audit_service.channel())
    writer = audit_pb2_grpc.AuditServiceStub(audit_service.peer_channel("policysvc"))
    ws = (await policy.CreateWorkspace(policy_pb2.CreateWorkspaceRequest(name="W"))).workspace
    await policy.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(
            workspace_id=ws.workspace_id, eligible=True, baa_reference="BAA-1"
        )
    )
    cloud = policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE
    dst = (
        await policy.CreateDestination(
            policy_pb2.CreateDestinationRequest(workspace_id=ws.workspace_id, name="D", type=cloud)
        )
    ).destination.destination_id
    bad_outcome = event(ws.workspace_id)
    bad_outcome.outcome = unknown
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "CreateDestination.type": lambda: policy.CreateDestination(
            policy_pb2.CreateDestinationRequest(
                workspace_id=ws.workspace_id, name="X", type=unknown
            )
        ),
        "SetClassification.override.classification": lambda: policy.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=ws.workspace_id,
                override=policy_pb2.PathOverride(path="traits.email", classification=unknown),
            )
        ),
        "SetClassification.add_matcher.target": lambda: policy.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=ws.workspace_id,
                add_matcher=policy_pb2.Matcher(
                    name="m",
                    target=unknown,
                    kind=policy_pb2.MATCH_KIND_EXACT,
                    pattern="x",
                    classification=policy_pb2.CLASSIFICATION_RED,
                ),
            )
        ),
        "SetClassification.add_matcher.kind": lambda: policy.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=ws.workspace_id,
                add_matcher=policy_pb2.Matcher(
                    name="m",
                    target=policy_pb2.MATCHER_TARGET_KEY,
                    kind=unknown,
                    pattern="x",
                    classification=policy_pb2.CLASSIFICATION_RED,
                ),
            )
        ),
        "SetClassification.add_matcher.classification": lambda: policy.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=ws.workspace_id,
                add_matcher=policy_pb2.Matcher(
                    name="m",
                    target=policy_pb2.MATCHER_TARGET_KEY,
                    kind=policy_pb2.MATCH_KIND_EXACT,
                    pattern="x",
                    classification=unknown,
                ),
            )
        ),
        "EnableEncryption.format": lambda: policy.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(
                destination_id=dst, fields=["traits.email"], format=unknown
            )
        ),
        "GenerateKeyPair.algorithm": lambda: keys.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(destination_id=dst, algorithm=unknown)
        ),
        "GenerateKeyPair.passphrase_kdf": lambda: keys.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(
                destination_id=dst, passphrase="a long passphrase 1", passphrase_kdf=unknown
            )
        ),
        "RegenerateKeyPair.algorithm": lambda: keys.RegenerateKeyPair(
            keys_pb2.RegenerateKeyPairRequest(destination_id=dst, algorithm=unknown)
        ),
        "RegenerateKeyPair.activation": lambda: keys.RegenerateKeyPair(
            keys_pb2.RegenerateKeyPairRequest(destination_id=dst, activation=unknown)
        ),
        "RegenerateKeyPair.passphrase_kdf": lambda: keys.RegenerateKeyPair(
            keys_pb2.RegenerateKeyPairRequest(
                destination_id=dst, passphrase="a long passphrase 1", passphrase_kdf=unknown
            )
        ),
        "ImportPublicKey.activation": lambda: keys.ImportPublicKey(
            keys_pb2.ImportPublicKeyRequest(
                destination_id=dst, public_key_pem="not a key", activation=unknown
            )
        ),
        "RecordEvents.events[].outcome": lambda: writer.RecordEvents(
            audit_pb2.RecordEventsRequest(events=[bad_outcome])
        ),
        "ExportEvents.format": lambda: _drain(
            audit.ExportEvents(
                audit_pb2.ExportEventsRequest(
                    filter=audit_pb2.AuditFilter(workspace_id=ws.workspace_id), format=unknown
                )
            )
        ),
    }
    codes = {name: await code_of(call()) for name, call in calls.items()}
    await keys.GenerateKeyPair(keys_pb2.GenerateKeyPairRequest(destination_id=dst))
    regenerated = {
        name: await code_of(calls[name]())
        for name in ("RegenerateKeyPair.algorithm", "RegenerateKeyPair.activation")
    }
    assert {**codes, **regenerated} == {name: INVALID for name in calls}
    assert [await serving(s) for s in (policy_service, keys_service, audit_service)] == [
        True,
        True,
        True,
    ]


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def test_undecodable_bytes_are_invalid_arguments(start: StartService) -> None:
    """Bytes that are not the method's message (bad wire format) answer INVALID_ARGUMENT."""
    service = await start("policysvc")
    channel = service.channel()
    raw = channel.unary_unary(
        "/phiseal.policy.v1.PolicyService/GetWorkspace",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    # Field 1 (workspace_id, a string) carrying invalid UTF-8; then a truncated varint.
    codes = [await code_of(raw(b"\x0a\x02\xff\xfe")), await code_of(raw(b"\x08\xff"))]
    assert codes == [INVALID, INVALID]
    assert await serving(service)


async def test_hostile_samples_and_details_are_invalid_arguments(
    start: StartService, tmp_path: Path
) -> None:
    """Deeply nested, oversized and non-object sample events, and oversized audit details,
    are refused with INVALID_ARGUMENT; the services stay healthy."""
    policy_service = await start("policysvc")
    audit_service = await start("auditsvc", AUDITSVC_SIGNING_KEY_FILE=str(tmp_path / "k.pem"))
    policy = policy_pb2_grpc.PolicyServiceStub(policy_service.channel())
    writer = audit_pb2_grpc.AuditServiceStub(audit_service.peer_channel("policysvc"))
    ws = (await policy.CreateWorkspace(policy_pb2.CreateWorkspaceRequest(name="W"))).workspace
    deep = '{"properties": ' * 2000 + "1" + "}" * 2000
    huge = '{"properties": {"notes": "' + "x" * (300 * 1024) + '"}}'
    samples = [deep, huge, "[1, 2]", "{not json"]
    codes = [
        await code_of(
            policy.ListClassifications(
                policy_pb2.ListClassificationsRequest(
                    workspace_id=ws.workspace_id, sample_events=[sample]
                )
            )
        )
        for sample in samples
    ]
    big = struct_pb2.Struct()
    big.update({"blob": "x" * (300 * 1024)})
    oversized = event(ws.workspace_id)
    oversized.details.CopyFrom(big)
    recorded = await code_of(writer.RecordEvents(audit_pb2.RecordEventsRequest(events=[oversized])))
    assert (codes, recorded) == ([INVALID] * len(samples), INVALID)
    assert [await serving(policy_service), await serving(audit_service)] == [True, True]


async def test_a_message_over_the_size_limit_is_resource_exhausted(start: StartService) -> None:
    """PHISEAL_MAX_MESSAGE_BYTES is enforced before any handler runs; the service stays up."""
    service = await start("policysvc", PHISEAL_MAX_MESSAGE_BYTES="4096")
    policy = policy_pb2_grpc.PolicyServiceStub(service.channel())
    request = policy_pb2.ListClassificationsRequest(
        workspace_id="ws_1", sample_events=['{"traits": {"a": "' + "x" * 8192 + '"}}']
    )
    code = await code_of(policy.ListClassifications(request))
    assert (code, await serving(service)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, True)
