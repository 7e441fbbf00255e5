"""encode_response writes the bytes protobuf would: the reference is the message built with the
generated classes and serialised by protobuf."""

from __future__ import annotations

import pytest
from phiseal.encrypt.v1 import encrypt_pb2

from services.common.server.protoconv import format_to_proto
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc.encryption import BatchResult, EventError, EventOutcome
from services.encryptsvc.wire import encode_response, passthrough, varint


def reference(result: BatchResult) -> encrypt_pb2.EncryptEventsResponse:
    """The response as the generated classes build it (the servicer's code before wire.py)."""
    response = encrypt_pb2.EncryptEventsResponse(
        policy_version=result.policy_version,
        kid=result.kid,
        encryption_enabled=result.enabled,
        format=format_to_proto(result.format),
    )
    for outcome in result.outcomes:
        if outcome.error is None:
            response.results.add(
                event=outcome.event or b"", encrypted_fields=outcome.encrypted_fields
            )
        else:
            e = outcome.error
            response.results.add(
                error=encrypt_pb2.EventError(code=e.code, message=e.message, path=e.path)
            )
    return response


OUTCOMES = [
    EventOutcome(b'{"a":1}', None, 0),
    EventOutcome(b"", None, 0),  # an empty event is still the oneof's "event"
    EventOutcome(b'{"e":"x"}', None, 1),
    EventOutcome(b"x" * 127, None, 127),
    EventOutcome(b"y" * 128, None, 128),  # two-byte lengths and counts
    EventOutcome(b"z" * 16_384, None, 300),  # three-byte length
    EventOutcome(b"w" * (2**21 + 5), None, 2**32 - 1),  # four-byte length, largest uint32
    EventOutcome(None, EventError("INVALID_ARGUMENT", "the event is not JSON", "")),
    EventOutcome(None, EventError("FAILED_PRECONDITION", "zoë's value at é ✓", "traits.é")),
]


@pytest.mark.parametrize("fmt", list(EncryptionFormat))
@pytest.mark.parametrize("enabled", [True, False])
def test_the_bytes_are_protobufs_own(fmt: EncryptionFormat, enabled: bool) -> None:
    result = BatchResult(OUTCOMES, 2**40 + 3, "kid-é" if enabled else "", enabled, fmt)
    wire = encode_response(result)
    assert wire == reference(result).SerializeToString()
    assert encrypt_pb2.EncryptEventsResponse.FromString(wire) == reference(result)


def test_every_outcome_alone_and_none_at_all() -> None:
    for outcome in [*OUTCOMES, None]:
        outcomes = [] if outcome is None else [outcome]
        result = BatchResult(outcomes, 0, "", False, EncryptionFormat.JWE)
        assert encode_response(result) == reference(result).SerializeToString()


def test_varint_matches_protobuf() -> None:
    """(Zero is never written: protobuf omits a zero scalar.)"""
    for n in [1, 127, 128, 300, 16_383, 16_384, 2**21, 2**28, 2**35, 2**63]:
        message = encrypt_pb2.EncryptEventsResponse(policy_version=n)
        assert message.SerializeToString() == b"\x10" + varint(n)


def test_the_serializer_passes_bytes_and_serialises_messages() -> None:
    message = encrypt_pb2.EncryptEventsResponse(kid="k")
    assert passthrough(b"\x1a\x01k") == b"\x1a\x01k" == passthrough(message)
