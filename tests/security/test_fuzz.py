"""Property-based fuzzing (hypothesis) of every RPC of every service with hostile requests.

Valid credentials (the development admin; the right peer identity for service-only RPCs) so
that input validation, not authentication, is what answers: random bytes as the serialized
request, messages built from the descriptors with hostile field values (huge strings, NUL
bytes, invalid UTF-8 and malformed, deep or wrongly typed JSON in events, unknown enum
numbers, extreme integers and timestamps, numbers past 64 bits), hostile events for the three
RPCs that parse them, numbers that must leave EncryptEvents digit for digit, and garbage
authorization headers; and the hot path's own hostile classes: type drift at every depth of a
named path, very large selected arrays, wrong-service peers on the right port, low-order and
unusable public keys, forged kids before genuine values in the kit. Only expected status codes
may come back (never INTERNAL, UNKNOWN or a timeout), no marked value leaves in plaintext, and
every server still answers SERVING afterwards. About 4,900 calls per run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from phiseal.keys.v1 import keys_pb2

from phiseal_decrypt import Decryptor, Keyring, looks_like_jwe
from phiseal_decrypt.core import decrypt_lines
from phiseal_dev.localpg import free_port
from phiseal_dev.testing import eventually, peer_channel, start_service
from services.common.fieldpath import FieldPath, parse_selection
from services.common.vocabulary import EncryptionFormat
from services.encryptsvc.encryption import Encryptor, Limits, Policy
from services.encryptsvc.envelope import JweSealer, RecipientKey
from tests import weak_keys
from tests.auditsvc.helpers import event
from tests.encryptsvc.impostors import Answers, serve_impostor
from tests.encryptsvc.keys import x25519_key
from tests.encryptsvc.stack import FIELDS
from tests.rules import ALL_RULES
from tests.security.calls import call, serving
from tests.security.conftest import Stack
from tests.security.world import Rpc, World, every_rpc

RPCS = every_rpc()
# Codes that mean the server failed rather than refused: never acceptable.
FAILURES = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
}
# Fixed counts (no profile): ~4,000 calls, a minute or two on two busy cores. Locally every run
# explores new examples; in CI (CI=true) the examples are derived from the test itself, so a
# submission is judged on the same inputs it was checked with, and a new find surfaces locally.
FUZZ = settings(
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Generating an RSA key costs a second or more: key-making RPCs never get a real destination.
KEY_MAKING = {"GenerateKeyPair", "RegenerateKeyPair", "ImportPublicKey"}


@dataclass
class Target:
    world: World
    channels: dict[str, grpc.aio.Channel]  # method -> a channel with valid credentials
    bare: dict[str, grpc.aio.Channel]  # service -> a TLS channel without credentials
    stack: Stack
    # EncryptEvents as the producer, taking responses up to the server's 16 MiB (grpc clients
    # default to 4 MiB).
    big_encrypt: encrypt_pb2_grpc.EncryptServiceStub


@pytest_asyncio.fixture(scope="module")
async def target(stack: Stack) -> AsyncIterator[Target]:
    world = await World.create(stack, "Fuzz")
    channels: dict[str, grpc.aio.Channel] = {}
    for rpc in RPCS:
        service = stack.services[rpc.service]
        rule = ALL_RULES[rpc.method]
        # Service-only RPCs over mutual TLS as an allowed peer; the rest as the dev admin.
        channels[rpc.method] = (
            service.peer_channel(sorted(rule.services)[0])
            if rule.person is None
            else service.channel()
        )
    bare = {name: service.channel(token=None) for name, service in stack.services.items()}
    big = peer_channel(
        stack.encrypt.peer_address,
        "producer",
        [("grpc.max_receive_message_length", 32 * 1024 * 1024)],
        service="encryptsvc",
    )
    yield Target(world, channels, bare, stack, encrypt_pb2_grpc.EncryptServiceStub(big))
    await big.close(None)


# --- hostile values -------------------------------------------------------------------------

HUGE = "x" * 200_000
DEEP = '{"properties": ' * 5000 + "1" + "}" * 5000
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
# Numbers past 64 bits (and others orjson would rewrite): -0, exponents, 1e400, long fractions.
big_numbers = st.one_of(
    st.integers().filter(lambda n: not -(2**63) <= n < 2**64).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["-0", "1e400", "-1e400", "1E5", "20.50", "1e-400"]),
)
big_number_events = st.builds(
    lambda mid, a, b, c: (
        f'{{"messageId":"{mid}","order_id":{a},'
        f'"properties":{{"copay":{b},"total":[{c}, {a}]}},"traits":{{"email":{c}}}}}'
    ),
    st.sampled_from(["m1", ""]),
    big_numbers,
    big_numbers,
    big_numbers,
)
json_texts = st.one_of(
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.dictionaries(
        st.sampled_from(["context", "traits", "properties", "messageId", "type"]), json_values
    ).map(lambda v: orjson.dumps(v).decode()),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: '{"traits": ' * n + "null" + "}" * n),
    st.just(DEEP),
    st.text(max_size=40).map(lambda t: '{"traits": {"email": "' + t),  # truncated
    st.just('{"properties": {"notes": "' + HUGE + '"}}'),
    st.just('{"a": NaN, "b": Infinity}'),
    big_number_events,
    st.just('{"messageId": {"nested": true}, "properties": []}'),
)
paths = st.one_of(
    st.sampled_from(["traits.email", "properties.allergy[*]", "context.traits.phone"]),
    st.lists(st.text(max_size=6), min_size=1, max_size=6).map(".".join),
    st.just("traits." + "a." * 5000 + "b"),
    st.just("properties[" + "9" * 40 + "]"),
)
nul_text = st.text(max_size=20).map(lambda t: t + "\x00" + t)


def strings(world: World, rpc: Rpc) -> st.SearchStrategy[str]:
    ids = [world.workspace_id, world.main, world.unencrypted]
    real = st.nothing() if rpc.name in KEY_MAKING else st.sampled_from(ids)
    return st.one_of(st.text(max_size=30), real, st.just(HUGE), nul_text, paths, json_texts)


event_bytes = st.one_of(
    st.binary(max_size=300),
    json_texts.map(str.encode),
    st.binary(min_size=1, max_size=40).map(lambda b: b'{"traits": {"email": "' + b + b'"}}'),
    st.just(b'{"traits": {"email": "\xff\xfe"}}'),
)


def integers(field: Any) -> st.SearchStrategy[int]:
    bits = {
        FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
        FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
        FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
        FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
        FieldDescriptor.CPPTYPE_ENUM: (-(2**31), 2**31 - 1),  # proto3 enums are open
    }[field.cpp_type]
    low, high = bits
    return st.one_of(st.sampled_from([low, high, 0, 1, 2, 3, 99]), st.integers(low, high))


def fill(data: st.DataObject, message: Message, world: World, rpc: Rpc, depth: int = 0) -> None:
    """Sets a random subset of ``message``'s fields to hostile values, recursively."""
    if isinstance(message, struct_pb2.Struct):
        message.update(data.draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4)))
        return
    if isinstance(message, timestamp_pb2.Timestamp):
        message.seconds = data.draw(st.integers(-(2**62), 2**62))
        message.nanos = data.draw(st.integers(-(2**31), 2**31 - 1))
        return
    for field in message.DESCRIPTOR.fields:
        if not data.draw(st.booleans()):
            continue
        repeated = field.is_repeated
        count = data.draw(st.integers(0, 3)) if repeated else 1
        for _ in range(count):
            if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                if depth > 3:
                    break
                child = getattr(message, field.name).add() if repeated else None
                child = child if child is not None else getattr(message, field.name)
                fill(data, child, world, rpc, depth + 1)
                if not repeated:
                    child.SetInParent()
                continue
            value = draw_scalar(data, field, world, rpc)
            if repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)


def draw_scalar(data: st.DataObject, field: Any, world: World, rpc: Rpc) -> Any:
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return data.draw(st.booleans())
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return data.draw(event_bytes)
        return data.draw(strings(world, rpc))
    if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return data.draw(st.floats(width=32))
    return data.draw(integers(field))


def failed(code: grpc.StatusCode, details: str) -> str | None:
    return f"{code.name}: {details}" if code in FAILURES else None


# --- the properties -------------------------------------------------------------------------


@settings(FUZZ, max_examples=1200)
@given(rpc=st.sampled_from(RPCS), raw=st.binary(max_size=400))
@example(rpc=RPCS[0], raw=b"\x0a\x02\xff\xfe")  # invalid UTF-8 in a string field
@example(rpc=RPCS[0], raw=b"\x08\xff")  # a truncated varint
async def test_random_bytes_are_refused_not_crashed_on(
    target: Target, rpc: Rpc, raw: bytes
) -> None:
    """Any bytes as any RPC's serialized request: an answer, never a server failure."""
    code, details = await call(target.channels[rpc.method], rpc, raw)
    assert failed(code, details) is None, rpc.method


@settings(FUZZ, max_examples=1800)
@given(rpc=st.sampled_from(RPCS), data=st.data())
async def test_hostile_field_values_are_refused_not_crashed_on(
    target: Target, rpc: Rpc, data: st.DataObject
) -> None:
    """Messages of the right type with hostile values in random fields: never a failure."""
    request = rpc.request()
    fill(data, request, target.world, rpc)
    code, details = await call(target.channels[rpc.method], rpc, request)
    assert failed(code, details) is None, (rpc.method, str(request)[:500])


EVENT_RPCS = [
    r for r in RPCS if r.name in ("EncryptEvents", "PreviewEncryption", "ListClassifications")
]


@settings(FUZZ, max_examples=600)
@given(
    rpc=st.sampled_from(EVENT_RPCS),
    events=st.lists(event_bytes, min_size=1, max_size=5),
)
async def test_hostile_events_are_refused_or_per_event_errors(
    target: Target, rpc: Rpc, events: list[bytes]
) -> None:
    """Hostile events for a real destination or workspace: OK (with per-event errors) or
    INVALID_ARGUMENT, nothing else."""
    request: Message = target.world.request(rpc)
    field = "events" if rpc.name == "EncryptEvents" else "sample_events"
    values: list[Any] = (
        events if rpc.name == "EncryptEvents" else [e.decode(errors="replace") for e in events]
    )
    request.ClearField(field)
    getattr(request, field).extend(values)
    code, details = await call(target.channels[rpc.method], rpc, request)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, details)


PERSON_RPCS = [r for r in RPCS if ALL_RULES[r.method].person is not None]
garbage_headers = st.one_of(
    st.text(max_size=200),
    st.text(max_size=200).map(lambda t: "Bearer " + t),
    st.lists(st.text(max_size=60), min_size=3, max_size=3).map(lambda p: "Bearer " + ".".join(p)),
    st.binary(max_size=90).map(lambda b: "Bearer eyJ" + b.hex()),
    st.just("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),  # alg none
)


@settings(FUZZ, max_examples=400)
@given(rpc=st.sampled_from(PERSON_RPCS), header=garbage_headers)
@example(rpc=PERSON_RPCS[0], header="Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
async def test_garbage_authorization_is_unauthenticated(
    target: Target, rpc: Rpc, header: str
) -> None:
    """Whatever the authorization header holds, a non-token is UNAUTHENTICATED."""
    printable = "".join(c for c in header if 0x20 <= ord(c) < 0x7F)  # what metadata may carry
    bare = target.bare[rpc.service]
    request = target.world.request(rpc) if rpc.name not in KEY_MAKING else rpc.request()
    code, details = await call(bare, rpc, request, metadata=(("authorization", printable),))
    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, details)


# --- issue 11: shape drift, huge selected arrays, wrong-service peers, weak keys, forged kids --


def _encrypt_stub(target: Target) -> encrypt_pb2_grpc.EncryptServiceStub:
    return encrypt_pb2_grpc.EncryptServiceStub(target.channels[ENCRYPT_EVENTS])


ENCRYPT_EVENTS = "/phiseal.encrypt.v1.EncryptService/EncryptEvents"
NAMED = [p for p in parse_selection(FIELDS)]
markers = st.integers(0, 2**32).map(lambda n: f"PHI-{n:08x}")  # unmistakable plaintext


def _drift_value(kind: str, marker: str) -> Any:
    """A value of some JSON type carrying ``marker`` (numbers and null carry none)."""
    return {
        "string": marker,
        "array": [marker, {"k": marker}],
        "object": {"k": marker, "l": [marker]},
        "number": 7,
        "null": None,
    }[kind]


def _drifted(path: FieldPath, depth: int, value: Any) -> dict[str, Any]:
    """An event where the prefix of ``path`` of ``depth`` segments holds ``value``; the part
    above it is shaped as the path expects ([*] and indices as one-element arrays)."""
    node: Any = value
    for seg in reversed(path.segments[1:depth]):
        node = [node] if not isinstance(seg, str) else {seg: node}
    event: dict[str, Any] = {"messageId": "m-drift", str(path.segments[0]): node}
    return event


@settings(FUZZ, max_examples=300)
@given(
    path=st.sampled_from(NAMED),
    depth_fraction=st.floats(0, 1),
    kind=st.sampled_from(["string", "array", "object", "number", "null"]),
    marker=markers,
)
async def test_type_drift_at_every_depth_never_leaves_in_plaintext(
    target: Target, path: FieldPath, depth_fraction: float, kind: str, marker: str
) -> None:
    """A value of any type at any depth of a named path (root included): the event is
    encrypted and the marker inside that value appears nowhere in the answer."""
    depth = 1 + round(depth_fraction * (len(path.segments) - 1))
    if depth < len(path.segments):
        # Drift is a type the rest of the path cannot go into (the expected one is no drift).
        assume(kind != ("object" if isinstance(path.segments[depth], str) else "array"))
    event = _drifted(path, depth, _drift_value(kind, marker))
    request = encrypt_pb2.EncryptEventsRequest(
        destination_id=target.world.main, events=[orjson.dumps(event)]
    )
    response = await _encrypt_stub(target).EncryptEvents(request, timeout=30)
    (result,) = response.results
    assert result.WhichOneof("result") == "event", result.error
    assert marker.encode() not in result.event, (str(path), depth, kind)


@settings(FUZZ, max_examples=12)
@given(
    sizes=st.lists(
        st.sampled_from([0, 1, 1_500, 1_900, 2_500, 120_000]) | st.integers(0, 120_000),
        min_size=1,
        max_size=24,
    )
)
@example(sizes=[1_900] * 24)  # past the response's 16 MiB together
@example(sizes=[120_000, 1, 120_000])  # the 52.7 MB event, twice, around a small one
async def test_huge_selected_arrays_fail_alone_and_never_overflow_the_response(
    target: Target, sizes: list[int]
) -> None:
    """Events whose selected array has up to 120,000 elements: the call is OK, each event is
    encrypted (every element a JWE) or fails alone with RESOURCE_EXHAUSTED, and the response
    fits the maximum message size."""
    events = [
        orjson.dumps({"messageId": f"m{i}", "properties": {"allergy": [0] * n}})
        for i, n in enumerate(sizes)
    ]
    request = encrypt_pb2.EncryptEventsRequest(destination_id=target.world.main, events=events)
    response = await target.big_encrypt.EncryptEvents(request, timeout=60)
    assert len(response.results) == len(sizes)
    for n, result in zip(sizes, response.results, strict=True):
        if result.WhichOneof("result") == "error":
            assert result.error.code == "RESOURCE_EXHAUSTED", result.error
            assert n > 0
        else:
            allergy = orjson.loads(result.event)["properties"]["allergy"]
            assert len(allergy) == n
            assert all(looks_like_jwe(value) for value in allergy)
    assert response.ByteSize() <= 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("meant", "identity"),
    [
        ("policysvc", "producer"),
        ("policysvc", "keysvc"),
        ("policysvc", "encryptsvc"),
        ("policysvc", "auditsvc"),
        ("policysvc", "stranger"),
        ("keysvc", "producer"),
        ("keysvc", "policysvc"),
        ("keysvc", "stranger"),
    ],
)
async def test_wrong_service_peers_are_refused(target: Target, meant: str, identity: str) -> None:
    """A server on the port encryptsvc calls for ``meant``, with another identity's certificate
    from our CA, answering "encryption disabled" (and, as keysvc, a key): encryptsvc asks it
    nothing and the batch is UNAVAILABLE, never plaintext."""
    port = free_port()
    answers = Answers(key=lambda d: keys_pb2.KeyVersion())
    impostor = await serve_impostor(port, identity, answers)
    real = target.stack.services["keysvc" if meant == "policysvc" else "policysvc"]
    addrs = {meant: f"127.0.0.1:{port}", real.name: real.peer_address}
    encrypt = await start_service(
        "encryptsvc",
        None,
        {
            "POLICYSVC_ADDR": addrs["policysvc"],
            "KEYSVC_ADDR": addrs["keysvc"],
            "ENCRYPTSVC_PEER_TIMEOUT_SECONDS": "1",
        },
    )
    try:
        stub = encrypt_pb2_grpc.EncryptServiceStub(encrypt.peer_channel("producer"))
        marker = b"PHI-wrong-peer"
        event = b'{"messageId": "m", "traits": {"email": "' + marker + b'"}}'
        request = encrypt_pb2.EncryptEventsRequest(destination_id=target.world.main, events=[event])
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.EncryptEvents(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert answers.asked == []
    finally:
        await encrypt.stop()
        await impostor.stop(None)


async def _restore_eligibility(target: Target) -> None:
    """Marks the world's workspace HIPAA eligible again: the fuzzers send SetHipaaEligibility
    with hostile fields (eligible=false among them), and keysvc checks eligibility before it
    reads a key, so an example test would otherwise see FAILED_PRECONDITION by luck of order."""
    rpc = next(r for r in RPCS if r.name == "SetHipaaEligibility")
    code, details = await call(target.channels[rpc.method], rpc, target.world.request(rpc))
    assert code == grpc.StatusCode.OK, details


def _import_jwk(world: World, text: str) -> keys_pb2.ImportPublicKeyRequest:
    return keys_pb2.ImportPublicKeyRequest(
        destination_id=world.fresh_for_import, public_key_jwk=text
    )


async def test_low_order_and_unusable_keys_are_invalid_arguments(target: Target) -> None:
    """Every small-order X25519 point (JWK and PEM, top bit set or not) and every unusable
    RSA modulus: INVALID_ARGUMENT from ImportPublicKey."""
    await _restore_eligibility(target)
    rpc = next(r for r in RPCS if r.name == "ImportPublicKey")
    channel = target.channels[rpc.method]
    requests = {
        f"x25519 {name}": _import_jwk(target.world, weak_keys.x25519_jwk(raw))
        for name, raw in weak_keys.low_order_x25519().items()
    }
    for name, raw in weak_keys.low_order_x25519().items():
        pem = (
            x25519.X25519PublicKey.from_public_bytes(raw)
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        requests[f"x25519 pem {name}"] = keys_pb2.ImportPublicKeyRequest(
            destination_id=target.world.fresh_for_import, public_key_pem=pem
        )
    for name, n in weak_keys.unusable_rsa_moduli().items():
        requests[f"rsa {name}"] = _import_jwk(target.world, weak_keys.rsa_jwk(n))
    codes = {name: (await call(channel, rpc, request))[0] for name, request in requests.items()}
    assert codes == dict.fromkeys(requests, grpc.StatusCode.INVALID_ARGUMENT)


@settings(FUZZ, max_examples=150)
@given(raw=st.binary(min_size=32, max_size=32))
async def test_random_x25519_keys_import_or_are_refused(target: Target, raw: bytes) -> None:
    """Any 32 bytes as an X25519 JWK: imported, or INVALID_ARGUMENT (small order, non-canonical,
    already imported), never a failure."""
    rpc = next(r for r in RPCS if r.name == "ImportPublicKey")
    request = _import_jwk(target.world, weak_keys.x25519_jwk(raw))
    code, details = await call(target.channels[rpc.method], rpc, request)
    assert code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
    ), (code, details)


_KIT_KEY = x25519_key("dest_1.v1")


@settings(FUZZ, max_examples=150)
@given(
    kids=st.lists(st.text(max_size=30) | st.just("dest_1.v1") | st.just("dest_1.v2"), max_size=4),
    where=st.sampled_from(["properties.comment", "traits.nickname", "context.page"]),
    only=st.booleans(),
)
async def test_forged_kids_never_cost_a_genuine_value(
    kids: list[str], where: str, only: bool
) -> None:
    """Valid JWEs anyone with the public key can make, under any kids (the genuine one
    included), placed in free-text fields before genuine values: every genuine value still
    decrypts, with or without --only (the policy's paths)."""
    from tests.encryptsvc.test_encryption import FixedSource

    fields = ("traits.email", "properties.allergy[*]")
    policy = Policy("dest_1", 1, True, EncryptionFormat.JWE, fields)
    genuine = [
        {"messageId": f"m{i}", "traits": {"email": f"u{i}@x.y"}, "properties": {"allergy": [i]}}
        for i in range(3)
    ]
    result = await Encryptor(FixedSource(policy, _KIT_KEY), Limits()).encrypt(
        "dest_1", [orjson.dumps(e) for e in genuine]
    )
    root, key = where.split(".")
    lines = []
    for kid in kids:
        forged = JweSealer(RecipientKey(kid, _KIT_KEY.recipient.public_key), "dest_1")
        token = forged.seal(b'"forged"', "m-forged", where)
        lines.append(orjson.dumps({"messageId": "m-forged", root: {key: token}}))
    lines += [o.event or b"" for o in result.outcomes]
    ring = Keyring()
    ring.add(_KIT_KEY.private)
    problems: list[tuple[int, str, Exception]] = []
    opened = list(
        decrypt_lines(
            Decryptor(ring),
            lines,
            only=list(fields) if only else None,
            on_error=lambda n, p, e: problems.append((n, p, e)),
        )
    )
    assert problems == []
    assert [orjson.loads(line) for line in opened[len(kids) :]] == genuine


def _regressions(world: World) -> dict[str, tuple[str, Message]]:
    """Requests the fuzzer found answering INTERNAL, kept as fixed examples."""
    from phiseal.audit.v1 import audit_pb2
    from phiseal.keys.v1 import keys_pb2
    from phiseal.policy.v1 import policy_pb2

    return {
        # PostgreSQL text cannot hold U+0000: refused in the interceptor for every RPC.
        "NUL in VerifyChain.workspace_id": (
            "VerifyChain",
            audit_pb2.VerifyChainRequest(workspace_id="\x00"),
        ),
        "NUL in a Struct value": (
            "RecordEvents",
            audit_pb2.RecordEventsRequest(
                events=[event(world.workspace_id, details={"note": "a\x00b"})]
            ),
        ),
        # JSON has no NaN/Infinity: a Struct number that is not finite cannot be hashed.
        "Infinity in a Struct value": (
            "RecordEvents",
            audit_pb2.RecordEventsRequest(
                events=[event(world.workspace_id, details={"n": float("inf")})]
            ),
        ),
        "NaN in a Struct value": (
            "RecordEvents",
            audit_pb2.RecordEventsRequest(
                events=[event(world.workspace_id, details={"n": float("nan")})]
            ),
        ),
        "deeply nested JWK": (
            "ImportPublicKey",
            keys_pb2.ImportPublicKeyRequest(
                destination_id=world.fresh_for_import, public_key_jwk="[" * 100_000
            ),
        ),
        "NUL in GetWorkspace.workspace_id": (
            "GetWorkspace",
            policy_pb2.GetWorkspaceRequest(workspace_id="ws\x00"),
        ),
        # Sequences are bigint: a uint64 above 2**63-1 overflowed the query parameter.
        "to_sequence above bigint": (
            "VerifyChain",
            audit_pb2.VerifyChainRequest(workspace_id=world.workspace_id, to_sequence=2**64 - 1),
        ),
    }


async def test_fuzzing_regressions_are_invalid_arguments(target: Target) -> None:
    """What the fuzzer once crashed on now answers INVALID_ARGUMENT."""
    await _restore_eligibility(target)
    by_name = {rpc.name: rpc for rpc in RPCS}
    cases = _regressions(target.world)
    codes = {}
    for name, (method, request) in cases.items():
        rpc = by_name[method]
        codes[name] = (await call(target.channels[rpc.method], rpc, request))[0]
        if method == "RecordEvents" and codes[name] == grpc.StatusCode.OK:
            # Refused per entry since issue 13: the batch answers OK and names the entry.
            assert isinstance(request, audit_pb2.RecordEventsRequest)
            writer = audit_pb2_grpc.AuditServiceStub(target.channels[rpc.method])
            response = await writer.RecordEvents(request)
            if len(response.rejected) == len(request.events):
                codes[name] = grpc.StatusCode.INVALID_ARGUMENT
    assert codes == {name: grpc.StatusCode.INVALID_ARGUMENT for name in cases}


@settings(FUZZ, max_examples=150)
@given(number=big_numbers, named=big_numbers)
async def test_numbers_past_64_bits_leave_encryptsvc_digit_for_digit(
    target: Target, number: str, named: str
) -> None:
    """Numbers past 64 bits (and -0, exponents, 1e400) in fields the policy does not name come
    back from EncryptEvents exactly as sent, and a named one is sealed, never rewritten."""
    raw = (
        f'{{"messageId":"m1","order_id":{number},"properties":{{"total":[{number}],'
        f'"copay":{named}}}}}'
    ).encode()
    request = encrypt_pb2.EncryptEventsRequest(destination_id=target.world.main, events=[raw])
    rpc = next(r for r in RPCS if r.name == "EncryptEvents")
    channel = target.channels[rpc.method]
    response = await encrypt_pb2_grpc.EncryptServiceStub(channel).EncryptEvents(request, timeout=30)
    result = response.results[0]
    prefix = b'{"messageId":"m1","order_id":' + number.encode() + b',"properties":{"total":['
    assert (
        result.event.startswith(prefix + number.encode() + b'],"copay":"eyJ'),
        result.encrypted_fields,
    ) == (True, 1), result.event[:300]


async def test_every_server_is_still_serving(target: Target) -> None:
    """After the fuzzing, every service's health port answers SERVING (within a few health
    intervals: in this one test process a huge batch can delay a heartbeat past encryptsvc's
    staleness bound, which rightly reports NOT_SERVING until the next one arrives)."""
    services = target.stack.services

    async def all_serving() -> bool:
        return all([await serving(s) for s in services.values()])

    await eventually(all_serving, timeout=10)
