"""EncryptEvents over real gRPC: round trips, refusals, changes and outages while encrypting.

encryptsvc runs in-process exactly as deployed; policysvc and keysvc are the stand-ins in
stand_in_peers.py (real gRPC, in-memory state) until the real services land on main.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jwcrypto import jwe, jwk
from phiseal.common.v1 import common_pb2
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc

from phiseal_decrypt import BindingMismatch, DecryptError, Decryptor, Keyring, looks_like_jwe
from services.common.fieldpath import find, parse_selection
from services.common.testing import RunningService, start_service
from tests.encryptsvc.keys import KeyPair, rsa_key, x25519_key
from tests.encryptsvc.stand_in_peers import StandInPeers

SAMPLES = [
    orjson.loads(line)
    for line in (Path(__file__).parent.parent / "data" / "sample_events.jsonl")
    .read_bytes()
    .splitlines()
    if line.strip()
]
FIELDS = [
    "context.ip",
    "context.traits.email",
    "context.traits.phone",
    "properties.allergy[*]",
    "properties.copay",
    "properties.diagnosis",
    "properties.email",
    "properties.medication",
    "properties.notes",
    "properties.procedure",
    "traits.address",
    "traits.birthdate",
    "traits.email",
    "traits.logins",
    "traits.verified",
]
STALENESS = 1.0


@pytest_asyncio.fixture
async def peers() -> AsyncIterator[StandInPeers]:
    stand_in = StandInPeers(heartbeat=0.1)  # type: ignore[abstract]
    await stand_in.start()
    stand_in.set_policy("dest_1", FIELDS)
    stand_in.set_key("dest_1", rsa_key("dest_1.v1").public_pem)
    yield stand_in
    await stand_in.stop()


@pytest_asyncio.fixture
async def encryptsvc(peers: StandInPeers) -> AsyncIterator[RunningService]:
    service = await start_service(
        "encryptsvc",
        None,
        {
            # The stand-in peers serve plaintext.
            "PHISEAL_INSECURE": "true",
            "POLICYSVC_ADDR": peers.address,
            "KEYSVC_ADDR": peers.address,
            "ENCRYPTSVC_MAX_STALENESS_SECONDS": str(STALENESS),
            "ENCRYPTSVC_PEER_TIMEOUT_SECONDS": "0.5",
            "ENCRYPTSVC_MAX_BATCH_EVENTS": "50",
        },
    )
    # Both watch streams open and past their first RESYNC, so loaded entries stay cached.
    await _wait_for(lambda: _watched(peers), within=5)
    await asyncio.sleep(0.2)
    yield service
    await service.stop()


def _stub(service: RunningService) -> encrypt_pb2_grpc.EncryptServiceStub:
    return encrypt_pb2_grpc.EncryptServiceStub(service.channel())


async def _encrypt(
    stub: encrypt_pb2_grpc.EncryptServiceStub, events: list[bytes], destination: str = "dest_1"
) -> encrypt_pb2.EncryptEventsResponse:
    request = encrypt_pb2.EncryptEventsRequest(destination_id=destination, events=events)
    return await stub.EncryptEvents(request, timeout=10)


def _samples() -> list[bytes]:
    return [orjson.dumps(e) for e in SAMPLES]


def _assert_sealed(original: dict[str, Any], sealed: dict[str, Any], fields: list[str]) -> None:
    """Every value the fields name in ``original`` is a JWE string in ``sealed``."""
    for path in parse_selection(fields):
        for loc in find(sealed, path):
            value = loc.container[loc.key]  # type: ignore[index]
            assert isinstance(value, str), loc.concrete
            assert looks_like_jwe(value), loc.concrete
        assert len(list(find(original, path))) == len(list(find(sealed, path)))


async def test_sample_events_round_trip_through_kit_and_jwcrypto(
    encryptsvc: RunningService,
) -> None:
    """Every sample event, encrypted under a 15-field policy, decrypts back exactly."""
    response = await _encrypt(_stub(encryptsvc), _samples())
    assert (
        response.policy_version,
        response.kid,
        response.encryption_enabled,
    ) == (1, "dest_1.v1", True)
    assert response.format == common_pb2.ENCRYPTION_FORMAT_JWE
    key = rsa_key("dest_1.v1")
    ring = Keyring()
    ring.add(key.private)
    decryptor = Decryptor(ring)
    jwk_key = jwk.JWK.from_pem(key.private_pem)
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


async def test_altered_or_moved_ciphertext_fails(encryptsvc: RunningService) -> None:
    """One changed character, or a value moved to another event or field, fails to decrypt."""
    response = await _encrypt(_stub(encryptsvc), _samples()[:4])
    a = orjson.loads(response.results[0].event)
    b = orjson.loads(response.results[2].event)
    ring = Keyring()
    ring.add(rsa_key("dest_1.v1").private)
    decryptor = Decryptor(ring)
    token = a["traits"]["email"]
    altered = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    with pytest.raises(DecryptError):
        decryptor.decrypt_event({**a, "traits": {**a["traits"], "email": altered}})
    with pytest.raises(BindingMismatch):
        decryptor.decrypt_event({**a, "traits": {**a["traits"], "email": b["traits"]["email"]}})
    with pytest.raises(BindingMismatch):
        decryptor.decrypt_event({**a, "traits": {**a["traits"], "email": a["traits"]["birthdate"]}})


async def test_mixed_batch_gives_per_event_errors(
    encryptsvc: RunningService, peers: StandInPeers
) -> None:
    """Good, malformed, non-object, invalid UTF-8 and (SEGMENT) oversized events, in order."""
    peers.set_policy("dest_1", FIELDS, fmt=common_pb2.ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP)
    await asyncio.sleep(0.3)  # the CHANGED reaches encryptsvc
    long_note = {**SAMPLES[1], "properties": {**SAMPLES[1]["properties"], "notes": "z" * 500}}
    events = [
        _samples()[0],
        b'{"messageId": "x", "traits": {',
        b'"just a string"',
        b'{"messageId": "x", "traits": {"email": "\xc3\x28"}}',
        orjson.dumps(long_note),
        _samples()[1],
    ]
    response = await _encrypt(_stub(encryptsvc), events)
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["event", "error", "error", "error", "error", "event"]
    assert response.format == common_pb2.ENCRYPTION_FORMAT_SEGMENT_RSA_OAEP
    too_long = response.results[4].error
    assert (too_long.code, too_long.path) == ("FAILED_PRECONDITION", "properties.notes")
    ring = Keyring()
    ring.add(rsa_key("dest_1.v1").private)
    decryptor = Decryptor(ring)
    for index in (0, 5):
        sealed = orjson.loads(response.results[index].event)
        assert SAMPLES[index // 5] == decryptor.decrypt_event(sealed, segment=True)


@pytest.mark.parametrize(
    ("destination", "count", "code"),
    [
        ("", 1, grpc.StatusCode.INVALID_ARGUMENT),
        ("nope", 1, grpc.StatusCode.NOT_FOUND),
        ("dest_1", 51, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_batch_refusals(
    encryptsvc: RunningService, destination: str, count: int, code: grpc.StatusCode
) -> None:
    """Empty destination, unknown destination and an oversized batch are refused whole."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _encrypt(_stub(encryptsvc), [b"{}"] * count, destination)
    assert code == raised.value.code()


async def test_no_active_key_is_failed_precondition(
    encryptsvc: RunningService, peers: StandInPeers
) -> None:
    """Encryption enabled for a destination without a key: FAILED_PRECONDITION."""
    peers.set_policy("dest_2", FIELDS)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _encrypt(_stub(encryptsvc), _samples(), "dest_2")
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no active key" in (raised.value.details() or "")


async def test_disabled_policy_passes_events_through(
    encryptsvc: RunningService, peers: StandInPeers
) -> None:
    """Disabling encryption returns events unchanged and says encryption_enabled=false."""
    stub = _stub(encryptsvc)
    await _encrypt(stub, _samples()[:1])
    peers.set_policy("dest_1", FIELDS, enabled=False)
    await asyncio.sleep(0.3)
    response = await _encrypt(stub, _samples()[:2])
    assert (response.encryption_enabled, response.kid, response.policy_version) == (False, "", 2)
    assert _samples()[:2] == [r.event for r in response.results]


async def _wait_for(predicate: Any, within: float = STALENESS + 1) -> float:
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < within, "change did not take effect in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_policy_and_key_changes_take_effect_without_restart(
    encryptsvc: RunningService, peers: StandInPeers
) -> None:
    """A new field and a rotated key are used within the staleness bound."""
    stub = _stub(encryptsvc)
    await _encrypt(stub, _samples()[:1])
    peers.set_policy("dest_1", [*FIELDS, "traits.name"])

    async def name_encrypted() -> bool:
        sealed = orjson.loads((await _encrypt(stub, _samples()[:1])).results[0].event)
        return looks_like_jwe(sealed["traits"]["name"])

    await _wait_for(name_encrypted)
    new_kid = peers.set_key("dest_1", x25519_key("dest_1.v2").public_pem)

    async def rotated() -> bool:
        return (await _encrypt(stub, _samples()[:1])).kid == new_kid

    await _wait_for(rotated)


async def _health(service: RunningService) -> int:
    stub = health_pb2_grpc.HealthStub(service.channel())
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return int(response.status)


async def _watched(peers: StandInPeers) -> bool:
    return peers.watchers >= 2


async def test_peer_outage_past_the_bound_is_unavailable(
    encryptsvc: RunningService, peers: StandInPeers
) -> None:
    """With the peers down past the bound: UNAVAILABLE and NOT_SERVING; then recovery."""
    stub = _stub(encryptsvc)
    await _encrypt(stub, _samples()[:1])
    calls = peers.calls
    await _encrypt(stub, _samples()[:1])
    assert calls == peers.calls  # served from the cache
    peers.outage()
    await asyncio.sleep(STALENESS + 0.5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _encrypt(stub, _samples()[:1])
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE

    async def not_serving() -> bool:
        return bool(await _health(encryptsvc) == health_pb2.HealthCheckResponse.NOT_SERVING)

    await _wait_for(not_serving)
    peers.recover()

    async def encrypts_again() -> bool:
        try:
            await _encrypt(stub, _samples()[:1])
        except grpc.aio.AioRpcError:
            return False
        return True

    await _wait_for(encrypts_again, within=5)


async def test_no_named_field_in_plaintext_through_changes_and_outages(
    encryptsvc: RunningService, peers: StandInPeers
) -> None:
    """Encrypting continuously while fields, keys and peer availability change: every answer
    either encrypts every field its reported policy version names, or is UNAVAILABLE."""
    stub = _stub(encryptsvc)
    versions: dict[int, list[str]] = {1: FIELDS}
    keys: dict[str, KeyPair] = {"dest_1.v1": rsa_key("dest_1.v1")}
    stop = asyncio.Event()
    seen: dict[str, int] = {"ok": 0, "unavailable": 0}
    refusals: set[grpc.StatusCode] = set()

    async def producer() -> None:
        while not stop.is_set():
            try:
                response = await _encrypt(stub, _samples())
            except grpc.aio.AioRpcError as exc:
                refusals.add(exc.code())
                seen["unavailable"] += 1
                await asyncio.sleep(0.02)
                continue
            seen["ok"] += 1
            fields = versions[response.policy_version]
            ring = Keyring()
            ring.add(keys[response.kid].private)
            decryptor = Decryptor(ring)
            for original, result in zip(SAMPLES, response.results, strict=True):
                sealed = orjson.loads(result.event)
                _assert_sealed(original, sealed, fields)
                assert original == decryptor.decrypt_event(sealed)

    task = asyncio.create_task(producer())
    try:
        extra = ["traits.name", "traits.gender", "properties.clinic", "context.locale"]
        for step in range(4):
            fields = [*FIELDS, *extra[: step + 1]]
            versions[peers.set_policy("dest_1", fields)] = fields
            await asyncio.sleep(0.2)
            kid = f"dest_1.v{step + 2}"
            keys[kid] = x25519_key(kid) if step % 2 else rsa_key(kid)
            assert kid == peers.set_key("dest_1", keys[kid].public_pem)
            await asyncio.sleep(0.2)
            if step == 1:
                peers.outage()
                await asyncio.sleep(STALENESS + 0.4)
                # Changed during the outage: must be seen (or refused) after it.
                fields = [*fields, "properties.title"]
                versions[peers.set_policy("dest_1", fields)] = fields
                peers.recover()
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        await task
    assert seen["ok"] > 5
    assert seen["unavailable"] > 0
    assert {grpc.StatusCode.UNAVAILABLE} == refusals
