"""EncryptEvents domain logic with an in-memory snapshot source (no gRPC, no database)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from phiseal_decrypt import Decryptor, Keyring
from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc.encryption import Encryptor, Limits, Policy, Snapshot
from tests.encryptsvc.keys import KeyPair, rsa_key, x25519_key

FIELDS = ("properties.allergy[*]", "properties.notes", "traits.address", "traits.email")
EVENT: dict[str, Any] = {
    "messageId": "msg-1",
    "type": "identify",
    "traits": {"email": "a@b.c", "address": {"zip": "02100"}, "logins": 3},
    "properties": {"allergy": ["penicillin", "latex"], "notes": None},
}


@dataclass
class FixedSource:
    policy: Policy
    key: KeyPair | None

    async def snapshot(self, destination_id: str) -> Snapshot:
        return Snapshot(self.policy, self.key.recipient if self.key else None)


def _encryptor(
    fmt: EncryptionFormat = EncryptionFormat.JWE,
    key: KeyPair | None = None,
    fields: tuple[str, ...] = FIELDS,
    enabled: bool = True,
    **limits: int,
) -> Encryptor:
    policy = Policy("dest_1", 3, enabled, fmt, fields)
    return Encryptor(FixedSource(policy, key or rsa_key()), Limits(**limits))


def _open(key: KeyPair, event: bytes) -> dict[str, Any]:
    ring = Keyring()
    ring.add(key.private)
    return Decryptor(ring).decrypt_event(orjson.loads(event))


@pytest.mark.parametrize("key", [rsa_key(), x25519_key()], ids=["rsa", "x25519"])
async def test_named_fields_are_encrypted_and_round_trip(key: KeyPair) -> None:
    """Every named value becomes a string; the kit restores the original event exactly."""
    result = await _encryptor(key=key).encrypt("dest_1", [orjson.dumps(EVENT)])
    outcome = result.outcomes[0]
    assert outcome.event is not None
    sealed = orjson.loads(outcome.event)
    assert outcome.encrypted_fields == 5
    assert sealed["traits"]["logins"] == 3
    assert all(isinstance(v, str) for v in sealed["properties"]["allergy"])
    assert isinstance(sealed["traits"]["address"], str)
    assert _open(key, outcome.event) == EVENT
    assert (result.policy_version, result.kid, result.enabled) == (3, "dest_1.v1", True)


async def test_disabled_policy_returns_events_unchanged() -> None:
    """With encryption disabled the bytes come back untouched, and the response says so."""
    raw = [b'{"traits": {"email": "a@b.c"}}', b"not json"]
    result = await _encryptor(enabled=False).encrypt("dest_1", raw)
    assert raw == [o.event for o in result.outcomes]
    assert (result.enabled, result.kid) == (False, "")


async def test_enabled_without_key_fails_the_batch() -> None:
    """Encryption enabled and no active key: FAILED_PRECONDITION, nothing returned."""
    encryptor = Encryptor(
        FixedSource(Policy("dest_1", 1, True, EncryptionFormat.JWE, FIELDS), None), Limits()
    )
    with pytest.raises(FailedPrecondition, match="no active key"):
        await encryptor.encrypt("dest_1", [orjson.dumps(EVENT)])


async def test_batch_limits_and_destination_are_checked() -> None:
    """An empty destination is INVALID_ARGUMENT; a batch over the documented cap is
    RESOURCE_EXHAUSTED naming the cap."""
    encryptor = _encryptor(max_batch_events=2)
    with pytest.raises(InvalidArgument):
        await encryptor.encrypt(" ", [])
    with pytest.raises(ResourceExhausted, match="cap of 2"):
        await encryptor.encrypt("dest_1", [b"{}"] * 3)


async def test_mixed_batch_gives_per_event_errors_in_order() -> None:
    """Bad events fail alone with a code, message and path; good ones are encrypted."""
    deep = b'{"messageId":"m","a":' + b"[" * 40 + b"]" * 40 + b"}"
    events = [
        orjson.dumps(EVENT),
        b'{"traits": {"email": ',
        b"[1, 2]",
        b'{"traits": {"email": "\xff"}}',
        b'{"traits": {"email": "a@b.c"}}',  # no messageId
        deep,
        b'{"messageId":"x","p":"' + b"y" * 300 + b'"}',
    ]
    result = await _encryptor(max_event_bytes=200).encrypt("dest_1", events)
    codes = [(o.error.code, o.error.path) if o.error else "ok" for o in result.outcomes]
    assert codes == [
        "ok",
        ("INVALID_ARGUMENT", ""),
        ("INVALID_ARGUMENT", ""),
        ("INVALID_ARGUMENT", ""),
        ("INVALID_ARGUMENT", "messageId"),
        ("INVALID_ARGUMENT", ""),
        ("INVALID_ARGUMENT", ""),
    ]
    messages = [o.error.message for o in result.outcomes if o.error]
    assert "not valid JSON" in messages[0]
    assert "array, not an object" in messages[1]
    assert "UTF-8" in messages[2]
    assert "deeper than the limit of 32" in messages[4]
    assert "more than the limit of 200" in messages[5]
    assert all("a@b.c" not in m for m in messages)


async def test_event_without_named_fields_needs_no_message_id() -> None:
    """An event in which no named field occurs passes without a messageId."""
    result = await _encryptor().encrypt("dest_1", [b'{"type":"alias","userId":"u"}'])
    assert result.outcomes[0].event == b'{"type":"alias","userId":"u"}'


async def test_duplicate_keys_never_leak_a_hidden_copy() -> None:
    """A duplicated object key cannot smuggle a plaintext copy past the policy."""
    raw = b'{"messageId":"m","traits":{"email":"hidden@x.y"},"traits":{"name":"n"}}'
    result = await _encryptor().encrypt("dest_1", [raw])
    assert result.outcomes[0].event is not None
    assert b"hidden@x.y" not in result.outcomes[0].event


async def test_segment_value_too_long_is_a_per_event_error() -> None:
    """SEGMENT format: a value beyond one RSA block fails its event and names the path."""
    events = [
        orjson.dumps({"messageId": "a", "properties": {"notes": "short"}}),
        orjson.dumps({"messageId": "b", "properties": {"notes": "n" * 400}}),
    ]
    result = await _encryptor(EncryptionFormat.SEGMENT_RSA_OAEP).encrypt("dest_1", events)
    ok, bad = result.outcomes
    assert ok.event is not None
    assert bad.error is not None
    assert (bad.error.code, bad.error.path) == ("FAILED_PRECONDITION", "properties.notes")
    assert "n" * 20 not in bad.error.message


async def test_segment_with_x25519_key_fails_the_batch() -> None:
    """SEGMENT format on an X25519 key: the whole batch is FAILED_PRECONDITION."""
    with pytest.raises(FailedPrecondition, match="X25519"):
        await _encryptor(EncryptionFormat.SEGMENT_RSA_OAEP, x25519_key()).encrypt("dest_1", [b"{}"])


async def test_one_wrapped_key_per_batch() -> None:
    """All fields of all events in one batch share one wrapped content key."""
    events = [orjson.dumps({**EVENT, "messageId": f"m{i}"}) for i in range(20)]
    result = await _encryptor().encrypt("dest_1", events)
    wrapped = {
        value.split(".")[1]
        for o in result.outcomes
        for value in orjson.loads(o.event or b"{}")["properties"]["allergy"]
    }
    assert len(wrapped) == 1


async def test_few_events_with_many_fields_still_yield_the_loop() -> None:
    """A batch's yields follow the fields sealed, not only the event count: two events of 2,000
    array elements each let other tasks run while they are encrypted."""
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    events = [
        orjson.dumps({"messageId": f"m{i}", "properties": {"allergy": list(range(2000))}})
        for i in range(2)
    ]
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    result = await _encryptor(max_event_output_bytes=4 * 1024 * 1024).encrypt("dest_1", events)
    during = ticks - before
    stop = True
    await task
    assert [o.encrypted_fields for o in result.outcomes] == [2000, 2000]
    assert during >= 1


def _array_event(mid: str, n: int) -> bytes:
    return orjson.dumps({"messageId": mid, "properties": {"allergy": [0] * n}})


async def test_an_event_past_the_output_limit_fails_alone_before_encrypting() -> None:
    """An event whose encrypted form would pass the per-event output limit fails alone with
    RESOURCE_EXHAUSTED, and no data key is even used for it; its neighbours are encrypted."""
    encryptor = _encryptor(key=x25519_key(), max_event_output_bytes=100_000)
    events = [orjson.dumps(EVENT), _array_event("big", 5_000), orjson.dumps(EVENT)]
    result = await encryptor.encrypt("dest_1", events)
    first, big, last = result.outcomes
    assert big.error is not None
    assert big.error.code == "RESOURCE_EXHAUSTED"
    assert "100000" in big.error.message
    assert first.encrypted_fields == last.encrypted_fields == 5


async def test_the_response_stays_under_its_budget_and_the_rest_fail_alone() -> None:
    """Events whose output would overflow the response fail RESOURCE_EXHAUSTED ("another
    batch"), the response as sent stays within max_response_bytes, and earlier events are kept."""
    from services.encryptsvc.wire import encode_response

    budget = 300_000
    encryptor = _encryptor(key=x25519_key(), max_response_bytes=budget)
    events = [_array_event(f"m{i}", 300) for i in range(12)]
    result = await encryptor.encrypt("dest_1", events)
    codes = [o.error.code if o.error else "OK" for o in result.outcomes]
    assert codes[0] == "OK"
    assert "RESOURCE_EXHAUSTED" in codes
    # Once full, it stays full: no later event slips in out of order.
    assert codes == sorted(codes, key=lambda c: c != "OK")
    assert len(encode_response(result)) <= budget
    errors = [o.error for o in result.outcomes if o.error]
    assert all("another batch" in e.message for e in errors)
