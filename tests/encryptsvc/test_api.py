"""EncryptEvents over real gRPC against real policysvc and keysvc: round trips, refusals, and
changes and outages while encrypting.

Every policy and key is made through policysvc and keysvc as a customer would (conftest.Stack);
the private keys are the ones keysvc delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2
from jwcrypto import jwe, jwk
from phiseal.common.v1 import common_pb2
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc

from phiseal_decrypt import (
    BindingMismatch,
    DecryptError,
    Decryptor,
    Keyring,
    exactjson,
    looks_like_jwe,
)
from services.common.fieldpath import find, parse_selection
from tests.encryptsvc.conftest import STALENESS, Stack
from tests.encryptsvc.keys import KeyPair
from tests.encryptsvc.stack import (
    EXTRA_FIELDS,
    FIELDS,
    RSA_2048,
    SAMPLES,
    SEGMENT,
    X25519,
    health,
    wait_for,
)

T = TypeVar("T")


async def _encrypt(
    stub: encrypt_pb2_grpc.EncryptServiceStub, events: list[bytes], destination: str
) -> encrypt_pb2.EncryptEventsResponse:
    request = encrypt_pb2.EncryptEventsRequest(destination_id=destination, events=events)
    return await stub.EncryptEvents(request, timeout=10)


def _samples() -> list[bytes]:
    return [orjson.dumps(e) for e in SAMPLES]


def _decryptor(*keys: KeyPair) -> Decryptor:
    ring = Keyring()
    for key in keys:
        ring.add(key.private)
    return Decryptor(ring)


def _assert_sealed(original: dict[str, Any], sealed: dict[str, Any], fields: list[str]) -> None:
    """Every value the fields name in ``original`` is a JWE string in ``sealed``."""
    for path in parse_selection(fields):
        for loc in find(sealed, path):
            value = loc.container[loc.key]  # type: ignore[index]
            assert isinstance(value, str), loc.concrete
            assert looks_like_jwe(value), loc.concrete
        assert len(list(find(original, path))) == len(list(find(sealed, path)))


async def test_sample_events_round_trip_through_kit_and_jwcrypto(stack: Stack) -> None:
    """Every sample event, encrypted under a 15-field policy, decrypts back exactly."""
    response = await _encrypt(stack.stub, _samples(), stack.destination_id)
    assert (response.policy_version, response.kid, response.encryption_enabled) == (
        1,
        f"{stack.destination_id}.v1",
        True,
    )
    assert response.format == common_pb2.ENCRYPTION_FORMAT_JWE
    decryptor = _decryptor(stack.key)
    jwk_key = jwk.JWK.from_pem(stack.key.private_pem)
    total = 0
    for original, result in zip(SAMPLES, response.results, strict=True):
        sealed = orjson.loads(result.event)
        _assert_sealed(original, sealed, FIELDS)
        total += result.encrypted_fields
        assert original == decryptor.decrypt_event(sealed)
        # Independently: jwcrypto opens every field with only the private key.
        for path in parse_selection(FIELDS):
            for loc in find(sealed, path):
                token = jwe.JWE()
                token.deserialize(loc.container[loc.key], key=jwk_key)  # type: ignore[index]
                expected = next(
                    o.container[o.key]  # type: ignore[index]
                    for o in find(original, path)
                    if o.concrete == loc.concrete
                )
                assert expected == orjson.loads(token.payload)
    assert total > 12 * 8
    assert decryptor.unwraps == 1


async def test_x25519_destination_round_trips(stack: Stack) -> None:
    """A destination keyed X25519 by keysvc encrypts with ECDH-ES+A256KW; jwcrypto opens it."""
    destination, key = await stack.admin.encrypting_destination(
        stack.workspace_id, algorithm=X25519, name="X25519 webhook"
    )
    response = await _encrypt(stack.stub, _samples(), destination)
    assert response.kid == key.kid
    jwk_key = jwk.JWK.from_pem(key.private_pem)
    decryptor = _decryptor(key)
    for original, result in zip(SAMPLES, response.results, strict=True):
        sealed = orjson.loads(result.event)
        assert original == decryptor.decrypt_event(sealed)
        for path in parse_selection(FIELDS):
            for loc in find(sealed, path):
                token = jwe.JWE()
                token.deserialize(loc.container[loc.key], key=jwk_key)  # type: ignore[index]
                assert token.jose_header["alg"] == "ECDH-ES+A256KW"


async def test_altered_or_moved_ciphertext_fails(stack: Stack) -> None:
    """One changed character, or a value moved to another event or field, fails to decrypt."""
    response = await _encrypt(stack.stub, _samples()[:4], stack.destination_id)
    a = orjson.loads(response.results[0].event)
    b = orjson.loads(response.results[2].event)
    decryptor = _decryptor(stack.key)
    token = a["traits"]["email"]
    altered = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    with pytest.raises(DecryptError):
        decryptor.decrypt_event({**a, "traits": {**a["traits"], "email": altered}})
    with pytest.raises(BindingMismatch):
        decryptor.decrypt_event({**a, "traits": {**a["traits"], "email": b["traits"]["email"]}})
    with pytest.raises(BindingMismatch):
        decryptor.decrypt_event({**a, "traits": {**a["traits"], "email": a["traits"]["birthdate"]}})


async def test_mixed_batch_gives_per_event_errors(stack: Stack) -> None:
    """Good, malformed, non-object, invalid UTF-8 and (SEGMENT) oversized events, in order."""
    destination, key = await stack.admin.encrypting_destination(
        stack.workspace_id, fmt=SEGMENT, name="Segment-format webhook"
    )
    long_note = {**SAMPLES[1], "properties": {**SAMPLES[1]["properties"], "notes": "z" * 500}}
    events = [
        _samples()[0],
        b'{"messageId": "x", "traits": {',
        b'"just a string"',
        b'{"messageId": "x", "traits": {"email": "\xc3\x28"}}',
        orjson.dumps(long_note),
        _samples()[1],
    ]
    response = await _encrypt(stack.stub, events, destination)
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["event", "error", "error", "error", "error", "event"]
    assert response.format == common_pb2.ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP
    too_long = response.results[4].error
    assert (too_long.code, too_long.path) == ("FAILED_PRECONDITION", "properties.notes")
    assert "z" * 20 not in too_long.message
    decryptor = _decryptor(key)
    for index in (0, 5):
        sealed = orjson.loads(response.results[index].event)
        assert SAMPLES[index // 5] == decryptor.decrypt_event(sealed, segment=True)


@pytest.mark.parametrize(
    ("destination", "count", "code"),
    [
        ("", 1, grpc.StatusCode.INVALID_ARGUMENT),
        ("dst_does_not_exist", 1, grpc.StatusCode.NOT_FOUND),
        ("<dest>", 51, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_batch_refusals(
    stack: Stack, destination: str, count: int, code: grpc.StatusCode
) -> None:
    """Empty destination, unknown destination and an oversized batch are refused whole."""
    destination = destination.replace("<dest>", stack.destination_id)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _encrypt(stack.stub, [b"{}"] * count, destination)
    assert code == raised.value.code()


async def test_no_active_key_is_failed_precondition(stack: Stack) -> None:
    """Encryption enabled for a destination keysvc has no key for: FAILED_PRECONDITION."""
    destination = await stack.admin.destination(stack.workspace_id, "Keyless webhook")
    await stack.admin.enable(destination, FIELDS)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _encrypt(stack.stub, _samples(), destination)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no active key" in (raised.value.details() or "")


async def test_never_configured_destination_passes_events_through(stack: Stack) -> None:
    """A destination whose policy was never configured (version 0) encrypts nothing."""
    destination = await stack.admin.destination(stack.workspace_id, "Plain webhook")
    response = await _encrypt(stack.stub, _samples()[:2], destination)
    assert (response.encryption_enabled, response.kid, response.policy_version) == (False, "", 0)
    assert _samples()[:2] == [r.event for r in response.results]


async def test_disabled_policy_passes_events_through(stack: Stack) -> None:
    """DisableEncryption through policysvc: events come back unchanged, encryption_enabled=false."""
    await _encrypt(stack.stub, _samples()[:1], stack.destination_id)
    version = await stack.admin.disable(stack.destination_id)

    async def passes_through() -> bool:
        response = await _encrypt(stack.stub, _samples()[:2], stack.destination_id)
        return not response.encryption_enabled

    await wait_for(passes_through, STALENESS + 1)
    response = await _encrypt(stack.stub, _samples()[:2], stack.destination_id)
    assert (response.kid, response.policy_version) == ("", version)
    assert _samples()[:2] == [r.event for r in response.results]


async def test_policy_and_key_changes_take_effect_without_restart(stack: Stack) -> None:
    """A field added through policysvc and a key rotated through keysvc are used within the
    staleness bound."""
    await _encrypt(stack.stub, _samples()[:1], stack.destination_id)
    await stack.admin.update(stack.destination_id, add=["traits.name"])

    async def name_encrypted() -> bool:
        reply = await _encrypt(stack.stub, _samples()[:1], stack.destination_id)
        return looks_like_jwe(orjson.loads(reply.results[0].event)["traits"]["name"])

    await wait_for(name_encrypted, STALENESS + 1)
    new_key = await stack.admin.rotate(stack.destination_id, X25519)

    async def rotated() -> bool:
        reply = await _encrypt(stack.stub, _samples()[:1], stack.destination_id)
        return reply.kid == new_key.kid

    await wait_for(rotated, STALENESS + 1)
    reply = await _encrypt(stack.stub, _samples()[:1], stack.destination_id)
    assert SAMPLES[0] == _decryptor(new_key).decrypt_event(orjson.loads(reply.results[0].event))


async def _encrypts(stack: Stack) -> bool:
    try:
        await _encrypt(stack.stub, _samples()[:1], stack.destination_id)
    except grpc.aio.AioRpcError:
        return False
    return True


async def _not_serving(stack: Stack) -> bool:
    status = await health(stack.encrypt.channel())
    return bool(status == health_pb2.HealthCheckResponse.NOT_SERVING)


@pytest.mark.parametrize("peer", ["policysvc", "keysvc"])
async def test_peer_stopped_past_the_bound_is_unavailable_then_recovers(
    stack: Stack, peer: str
) -> None:
    """With policysvc or keysvc stopped past the bound: UNAVAILABLE and NOT_SERVING; a new
    instance on the same port brings encryption back."""
    assert await _encrypts(stack)
    await (stack.policy if peer == "policysvc" else stack.keys).stop()
    await asyncio.sleep(STALENESS + 0.5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _encrypt(stack.stub, _samples()[:1], stack.destination_id)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    await wait_for(lambda: _not_serving(stack), STALENESS + 1)
    await (stack.start_policysvc() if peer == "policysvc" else stack.start_keysvc())
    await wait_for(lambda: _encrypts(stack), 15)
    await wait_for(lambda: _not_serving_is(stack, False), 15)


async def _not_serving_is(stack: Stack, expected: bool) -> bool:
    return await _not_serving(stack) == expected


async def test_no_named_field_in_plaintext_through_changes_and_outages(stack: Stack) -> None:
    """Encrypting continuously while fields, keys and peer availability change: every answer
    either encrypts every field its reported policy version names, or is UNAVAILABLE.

    Changes go through a second policysvc replica, so one is made while the replica encryptsvc
    follows is down: encryptsvc must see it (RESYNC) once that replica is back.
    """
    other = await stack.start("policysvc", POLICYSVC_WATCH_HEARTBEAT_SECONDS="0.1")
    stack.admin.policy = type(stack.admin.policy)(other.channel())
    destination = stack.destination_id
    versions: dict[int, list[str]] = {1: FIELDS}
    keys: dict[str, KeyPair] = {stack.key.kid: stack.key}
    stop = asyncio.Event()
    seen: dict[str, int] = {"ok": 0, "unavailable": 0}
    refusals: set[grpc.StatusCode] = set()

    answers: list[encrypt_pb2.EncryptEventsResponse] = []

    async def producer() -> None:
        while not stop.is_set():
            try:
                answers.append(await _encrypt(stack.stub, _samples(), destination))
            except grpc.aio.AioRpcError as exc:
                refusals.add(exc.code())
                seen["unavailable"] += 1
            await asyncio.sleep(0.05)  # leave the (shared) CPU to the services

    task = asyncio.create_task(producer())
    try:
        fields = list(FIELDS)
        for step in range(4):
            fields = [*fields, EXTRA_FIELDS[step]]
            # Recorded before the call: encryptsvc may use the version before we hear back.
            versions[versions_next(versions)] = fields
            assert max(versions) == await stack.admin.update(destination, add=[fields[-1]])
            await asyncio.sleep(0.2)
            # keysvc asks the restarted policysvc replica: its channel may still be reconnecting.
            algorithm = X25519 if step % 2 else RSA_2048
            new_key = await _retrying(lambda: stack.admin.rotate(destination, algorithm))  # noqa: B023
            keys[new_key.kid] = new_key
            await asyncio.sleep(0.2)
            if step == 1:
                await stack.policy.stop()
                await asyncio.sleep(STALENESS + 0.4)
                fields = [*fields, EXTRA_FIELDS[4]]
                versions[versions_next(versions)] = fields
                assert max(versions) == await stack.admin.update(destination, add=[fields[-1]])
                await stack.start_policysvc()
                await asyncio.sleep(0.5)
        await wait_for(lambda: _encrypts(stack), 15)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await task
    # Checked afterwards: a rotated key may be used before its RegenerateKeyPair reply is read.
    for response in answers:
        fields = versions[response.policy_version]
        decryptor = _decryptor(keys[response.kid])
        for original, result in zip(SAMPLES, response.results, strict=True):
            sealed = orjson.loads(result.event)
            _assert_sealed(original, sealed, fields)
            assert original == decryptor.decrypt_event(sealed)
    seen["ok"] = len(answers)
    assert seen["ok"] > 5
    assert seen["unavailable"] > 0
    assert {grpc.StatusCode.UNAVAILABLE} == refusals


def versions_next(versions: dict[int, list[str]]) -> int:
    return max(versions) + 1


async def _retrying(call: Callable[[], Awaitable[T]], within: float = 15) -> T:
    """``call()``, retried while it answers UNAVAILABLE (a peer coming back)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def test_an_event_with_a_huge_selected_array_fails_alone(stack: Stack) -> None:
    """120,000 selected array elements (a 52 MB response before budgets) fail that event alone
    with RESOURCE_EXHAUSTED; the good events beside it come back encrypted."""
    huge = orjson.dumps({"messageId": "huge", "properties": {"allergy": [0] * 120_000}})
    events = [_samples()[0], huge, _samples()[1]]
    response = await _encrypt(stack.stub, events, stack.destination_id)
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["event", "error", "event"]
    assert response.results[1].error.code == "RESOURCE_EXHAUSTED"
    decryptor = _decryptor(stack.key)
    assert SAMPLES[1] == decryptor.decrypt_event(orjson.loads(response.results[2].event))


async def test_numbers_leave_exactly_as_sent_and_decrypt_exactly(stack: Stack) -> None:
    """Past 2^64, -0, 1E5, 20.50, 1e400: unnamed fields leave digit for digit, and a named
    field decrypts (kit) to exactly the JSON that was sent. Both were doubles before."""
    numbers = "[123456789012345678901234567890,-0,1E5,20.50,1e400,-9223372036854775809]"
    raw = (
        '{"messageId":"m-num","order_id":123456789012345678901234567890,'
        f'"properties":{{"copay":{numbers},"total":{numbers}}}}}'
    ).encode()
    response = await _encrypt(stack.stub, [raw], stack.destination_id)
    result = response.results[0]
    sealed = exactjson.loads(result.event)
    opened = _decryptor(stack.key).decrypt_event(sealed)
    assert (
        result.encrypted_fields,
        result.event.count(numbers.encode()),
        orjson.dumps(opened),
    ) == (
        1,
        1,  # properties.total, unnamed; copay is a JWE now
        raw,
    )
