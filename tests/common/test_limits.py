"""Hostile input: explicit limits answer INVALID_ARGUMENT and never quote the input."""

from __future__ import annotations

import grpc
import pytest

from services.common.errors import InvalidArgument
from services.common.hostile_json import json_depth
from services.common.limits import Limits, check_utf8
from tests.common import fake_service

LIMITS = Limits(max_event_bytes=1024, max_json_depth=4, max_batch_events=3, max_string_chars=20)


def refusal(raw: bytes) -> str:
    with pytest.raises(InvalidArgument) as caught:
        LIMITS.parse_event(raw)
    return caught.value.message


def test_valid_event_parses() -> None:
    assert LIMITS.parse_event(b'{"traits": {"email": "a@b.c"}}') == {"traits": {"email": "a@b.c"}}


def test_invalid_utf8_is_refused_with_offset() -> None:
    assert refusal(b'{"a": "\xff"}') == "event is not valid UTF-8 (first bad byte at 7)"


def test_malformed_json_is_refused_without_quoting() -> None:
    message = refusal(b'{"ssn": "123-45-6789"')
    assert (message.startswith("event is not valid JSON"), "123-45" in message) == (True, False)


def test_non_object_is_refused() -> None:
    assert refusal(b"[1, 2]") == "event is a JSON array, not an object; send one JSON object"


def test_deep_nesting_is_refused() -> None:
    assert (
        refusal(b'{"a": {"b": {"c": {"d": {}}}}}')
        == "event nests deeper than the limit of 4 levels"
    )


def test_huge_event_is_refused_before_parsing() -> None:
    assert (
        refusal(b'{"a": "' + b"x" * 2000 + b'"}')
        == "event is 2009 bytes, more than the limit of 1024; send less"
    )


def test_hostile_depth_is_measured_without_recursion() -> None:
    """100 000 levels deep: json_depth walks it iteratively (no RecursionError)."""
    value: object = {}
    for _ in range(100_000):
        value = [value]
    assert json_depth(value) == 100_001


def test_batch_and_text_limits() -> None:
    messages = []
    for check in (
        lambda: LIMITS.check_batch(4),
        lambda: LIMITS.check_text("x" * 21, "destination_id"),
        lambda: LIMITS.check_text("a\x00b", "destination_id"),
        lambda: check_utf8(b"\xc3", "name"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            check()
        messages.append(caught.value.message)
    assert messages == [
        "4 events in one request, more than the limit of 3: split the request",
        "destination_id is 21 characters; the limit is 20",
        "destination_id contains a NUL character",
        "name is not valid UTF-8 (first bad byte at 0)",
    ]


async def test_undecodable_request_is_invalid_argument() -> None:
    """Invalid UTF-8 in a protobuf string field: INVALID_ARGUMENT, not UNKNOWN, server healthy."""
    server = fake_service.build()
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            raw = channel.unary_unary(
                f"/{fake_service.SERVICE}/Echo",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(b"\x0a\x02\xff\xfe", timeout=5)
            after = await fake_service.call(channel, "Echo")(fake_service.Req(), timeout=5)
    finally:
        await server.stop()
    assert (caught.value.code(), after.status) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        fake_service.Resp.SERVING,
    )
