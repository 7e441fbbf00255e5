"""No request stalls policysvc: text that cannot be stored is refused at the door, the caller is
authorized before anything is parsed, caps answer RESOURCE_EXHAUSTED naming themselves, and the
worst request the caps allow leaves the event loop free for another caller's GetPolicy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson
import pytest
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from phiseal_dev.testing import RunningService, session_secrets
from services.common.data.paging import encode_token
from services.common.data.watch import MAX_WATCHES_PER_PERSON
from services.common.offload import INLINE_BELOW_US
from services.common.security.auth import Role
from services.common.security.tls import channel_credentials
from services.policysvc import analysis, caps
from services.policysvc.detectors import DETECTORS
from tests.conftest import StartService
from tests.policysvc.conftest import error_of, new_destination, new_workspace, outbox

# ASCII on the wire; the JSON escape in the quoted key decodes to a lone surrogate.
LONE = 'traits["\\ud800"]'
DEADLINE = 10.0
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def as_person(service: RunningService, memberships: dict[str, list[Role]]) -> PolicyServiceStub:
    token = session_secrets().token("mallory", memberships)
    return PolicyServiceStub(service.channel(token=token))


async def enabled_destination(stub: PolicyServiceStub) -> tuple[str, str]:
    workspace_id = await new_workspace(stub)
    destination_id = await new_destination(stub, workspace_id)
    await stub.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(destination_id=destination_id, fields=["traits.email"])
    )
    return workspace_id, destination_id


async def test_a_path_escaping_a_lone_surrogate_is_refused_naming_the_field(
    stub: PolicyServiceStub,
) -> None:
    """Every RPC taking field paths answers INVALID_ARGUMENT naming the request field, within
    the deadline (EnableEncryption's reply used to be lost, the others were INTERNAL)."""
    workspace_id, destination_id = await enabled_destination(stub)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "fields[0]": lambda: stub.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(
                destination_id=destination_id, fields=[LONE], expected_version=1
            ),
            timeout=DEADLINE,
        ),
        "add[0]": lambda: stub.UpdateEncryptedFields(
            policy_pb2.UpdateEncryptedFieldsRequest(
                destination_id=destination_id, add=[LONE], expected_version=1
            ),
            timeout=DEADLINE,
        ),
        "override.path": lambda: stub.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=workspace_id,
                override=policy_pb2.PathOverride(
                    path=LONE, classification=policy_pb2.CLASSIFICATION_YELLOW
                ),
            ),
            timeout=DEADLINE,
        ),
        "paths[0]": lambda: stub.ListClassifications(
            policy_pb2.ListClassificationsRequest(workspace_id=workspace_id, paths=[LONE]),
            timeout=DEADLINE,
        ),
        "proposed_fields[0]": lambda: stub.PreviewEncryption(
            policy_pb2.PreviewEncryptionRequest(
                destination_id=destination_id,
                proposed_fields=[LONE],
                use_proposed_fields=True,
                sample_events=['{"traits": {"email": "a@b.c"}}'],
            ),
            timeout=DEADLINE,
        ),
    }
    outcomes = {}
    for field, call in calls.items():
        code, message = await error_of(call())
        outcomes[field] = (code, message.startswith(f"{field}: ") and "surrogate" in message)
    assert outcomes == {field: (INVALID, True) for field in calls}


async def test_a_page_token_past_bigint_is_invalid(stub: PolicyServiceStub) -> None:
    """A well-formed token whose position no bigint holds is INVALID_ARGUMENT, not INTERNAL."""
    workspace_id = await new_workspace(stub)
    token = encode_token(f"destinations:{workspace_id}", 2**70)
    code, _ = await error_of(
        stub.ListDestinations(
            policy_pb2.ListDestinationsRequest(
                workspace_id=workspace_id, page=common_pb2.PageRequest(page_token=token)
            )
        )
    )
    assert code == INVALID


async def test_a_stranger_is_refused_before_the_paths_are_read(start: StartService) -> None:
    """A token holder of another workspace gets PERMISSION_DENIED (an unknown destination
    NOT_FOUND) however malformed or many the paths: nothing is parsed before authorization."""
    service = await start("policysvc")
    admin = PolicyServiceStub(service.channel())
    workspace_id, destination_id = await enabled_destination(admin)
    mallory = as_person(service, {"ws_elsewhere": [Role.ADMIN]})
    bad = ["nonsense"] * (caps.MAX_PATHS_PER_REQUEST + 1)
    samples = ["not json"] * (caps.MAX_SAMPLE_EVENTS + 1)
    codes = [
        (await error_of(call))[0]
        for call in (
            mallory.EnableEncryption(
                policy_pb2.EnableEncryptionRequest(destination_id=destination_id, fields=bad)
            ),
            mallory.UpdateEncryptedFields(
                policy_pb2.UpdateEncryptedFieldsRequest(
                    destination_id=destination_id, add=bad, expected_version=1
                )
            ),
            mallory.PreviewEncryption(
                policy_pb2.PreviewEncryptionRequest(
                    destination_id=destination_id, sample_events=samples
                )
            ),
            mallory.EnableEncryption(
                policy_pb2.EnableEncryptionRequest(destination_id="dst_missing", fields=bad)
            ),
            mallory.ListClassifications(
                policy_pb2.ListClassificationsRequest(
                    workspace_id=workspace_id, paths=bad, sample_events=samples
                )
            ),
            mallory.ListSelectableFields(
                policy_pb2.ListSelectableFieldsRequest(
                    destination_id=destination_id, paths=bad, sample_events=samples
                )
            ),
        )
    ]
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert codes == [denied, denied, denied, grpc.StatusCode.NOT_FOUND, denied, denied]


async def test_paths_past_the_cap_are_resource_exhausted(stub: PolicyServiceStub) -> None:
    """More field paths in one request than the cap: RESOURCE_EXHAUSTED naming it."""
    workspace_id, destination_id = await enabled_destination(stub)
    many = [f"traits.f{i}" for i in range(caps.MAX_PATHS_PER_REQUEST + 1)]
    calls = [
        stub.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(
                destination_id=destination_id, fields=many, expected_version=1
            )
        ),
        stub.UpdateEncryptedFields(
            policy_pb2.UpdateEncryptedFieldsRequest(
                destination_id=destination_id, add=many, expected_version=1
            )
        ),
        stub.PreviewEncryption(
            policy_pb2.PreviewEncryptionRequest(
                destination_id=destination_id, proposed_fields=many, use_proposed_fields=True
            )
        ),
        stub.ListClassifications(
            policy_pb2.ListClassificationsRequest(workspace_id=workspace_id, paths=many)
        ),
        stub.ListSelectableFields(
            policy_pb2.ListSelectableFieldsRequest(destination_id=destination_id, paths=many)
        ),
    ]
    outcomes = [await error_of(call) for call in calls]
    cap = str(caps.MAX_PATHS_PER_REQUEST)
    assert [(code, cap in message) for code, message in outcomes] == [(EXHAUSTED, True)] * 5


async def test_a_policy_cannot_grow_past_its_cap(stub: PolicyServiceStub) -> None:
    """A policy at its cap on fields refuses an update adding one more, naming the cap."""
    workspace_id = await new_workspace(stub)
    destination_id = await new_destination(stub, workspace_id)
    await stub.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id,
            add_matcher=policy_pb2.Matcher(
                name="numbered",
                target=policy_pb2.MATCHER_TARGET_KEY,
                kind=policy_pb2.MATCH_KIND_REGEX,
                pattern="^f[0-9]+$",
                classification=policy_pb2.CLASSIFICATION_YELLOW,
            ),
        )
    )
    await stub.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(
            destination_id=destination_id,
            fields=[f"traits.f{i}" for i in range(caps.MAX_POLICY_FIELDS)],
        )
    )
    code, message = await error_of(
        stub.UpdateEncryptedFields(
            policy_pb2.UpdateEncryptedFieldsRequest(
                destination_id=destination_id, add=["traits.f_over"], expected_version=1
            )
        )
    )
    assert (code, f"{caps.MAX_POLICY_FIELDS} fields per policy" in message) == (EXHAUSTED, True)


async def test_sample_events_past_their_caps_are_resource_exhausted(
    stub: PolicyServiceStub,
) -> None:
    """Too many sample events, too many characters of them, too many distinct paths in them:
    each RESOURCE_EXHAUSTED naming its cap."""
    workspace_id = await new_workspace(stub)
    wide = orjson.dumps(
        {"properties": {f"p{i}": 1 for i in range(caps.MAX_SAMPLED_PATHS + 1)}}
    ).decode()
    big = '{"traits": {"x": "' + "a" * (200 * 1024) + '"}}'
    cases = {
        str(caps.MAX_SAMPLE_EVENTS): ["{}"] * (caps.MAX_SAMPLE_EVENTS + 1),
        str(caps.MAX_SAMPLE_CHARS): [big] * (caps.MAX_SAMPLE_CHARS // len(big) + 1),
        str(caps.MAX_SAMPLED_PATHS): [wide],
    }
    outcomes = {}
    for cap, samples in cases.items():
        code, message = await error_of(
            stub.ListClassifications(
                policy_pb2.ListClassificationsRequest(
                    workspace_id=workspace_id, sample_events=samples
                ),
                timeout=60,
            )
        )
        outcomes[cap] = (code, cap in message)
    assert outcomes == {cap: (EXHAUSTED, True) for cap in cases}


async def test_a_workspace_stops_learning_paths_at_its_cap(
    stub: PolicyServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct sampled paths stored per workspace are capped: the request that would pass the
    cap is RESOURCE_EXHAUSTED naming it, and stores none of its paths."""
    monkeypatch.setattr(caps, "MAX_STORED_PATHS", 30)  # the service runs in this process
    workspace_id = await new_workspace(stub)

    def sample(first: int) -> str:
        return orjson.dumps({"traits": {f"k{i}": 1 for i in range(first, first + 20)}}).decode()

    def listing(samples: list[str]) -> Any:
        return stub.ListClassifications(
            policy_pb2.ListClassificationsRequest(
                workspace_id=workspace_id,
                sample_events=samples,
                page=common_pb2.PageRequest(page_size=500),
            )
        )

    await listing([sample(0)])
    code, message = await error_of(listing([sample(20)]))
    known = [f.path for f in (await listing([])).fields if f.path.startswith("traits.k")]
    assert (code, "30" in message, len(known)) == (EXHAUSTED, True, 20)


async def test_a_refused_sampling_request_leaves_no_audit_record(
    stub: PolicyServiceStub, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit record of accepted samples is written in the transaction that stores their
    paths and signals: a request the stored-paths cap refuses leaves none of them."""
    monkeypatch.setattr(caps, "MAX_STORED_PATHS", 3)
    workspace_id = await new_workspace(stub)
    ok = orjson.dumps({"userId": "u1", "traits": {"email": "a@b.example"}}).decode()
    over = orjson.dumps({"userId": "u2", "traits": {f"k{i}": "x" for i in range(5)}}).decode()
    codes = [
        await error_of_or_ok(
            stub.ListClassifications(
                policy_pb2.ListClassificationsRequest(
                    workspace_id=workspace_id, sample_events=samples
                )
            )
        )
        for samples in ([ok], [over])
    ]
    records = [
        e["end_user_id"]
        for e in await outbox(database_url)
        if e["event_type"] == "Privacy Sample Events Classified"
    ]
    assert (codes, records) == ([grpc.StatusCode.OK, EXHAUSTED], ["u1"])


async def test_the_value_check_cap_counts_the_built_in_detectors(
    stub: PolicyServiceStub,
) -> None:
    """With no custom value matcher, sampled strings still cost a check per built-in detector:
    past the cap the request is RESOURCE_EXHAUSTED naming it (before, it ran uncapped)."""
    workspace_id = await new_workspace(stub)
    per_event = 24_000
    strings = caps.MAX_VALUE_CHECKS // len(DETECTORS) + 1
    event = orjson.dumps({"properties": {"a": [{"b": "x"}] * per_event}}).decode()
    samples = [event] * (strings // per_event + 1)
    code, message = await error_of(
        stub.ListClassifications(
            policy_pb2.ListClassificationsRequest(workspace_id=workspace_id, sample_events=samples),
            timeout=60,
        )
    )
    assert (code, f"{caps.MAX_VALUE_CHECKS} value checks" in message) == (EXHAUSTED, True)


async def test_detectors_in_the_worker_classify_and_are_remembered(
    stub: PolicyServiceStub,
) -> None:
    """A sample large enough for the analysis worker: the built-in detectors run there, in the
    same walk, and what they saw classifies the path now and in later listings."""
    workspace_id = await new_workspace(stub)
    sample = orjson.dumps(
        {"properties": {"k": "078-05-1120", "pad": "x" * 20_000}, "userId": "u1"}
    ).decode()
    state = analysis.ClassifierState([], [], {})
    assert analysis.sample_cost([sample], state) > INLINE_BELOW_US  # it goes to the worker

    async def decided(samples: list[str]) -> tuple[int, str]:
        reply = await stub.ListClassifications(
            policy_pb2.ListClassificationsRequest(workspace_id=workspace_id, sample_events=samples)
        )
        found = {f.path: f for f in reply.fields}["properties.k"]
        return found.classification, found.matcher_id

    red = (policy_pb2.CLASSIFICATION_RED, "default:value:ssn")
    assert [await decided([sample]), await decided([])] == [red, red]


def worst_sample() -> str:
    """An event at the size cap with as many distinct paths as the caps allow, in an array of
    small objects: the old per-path lookup walked the whole array once per path, O(N^2)."""
    keys = caps.MAX_SAMPLED_PATHS - 10
    items = [{f"k{i % keys}": "v"} for i in range(240 * 1024 // 14)]
    return orjson.dumps({"properties": {"items": items}}).decode()


def probe(address: str, destination_id: str, stop: threading.Event) -> list[grpc.StatusCode]:
    """GetPolicy as encryptsvc, with its 2 s deadline, until ``stop``; each call's status.

    A blocking client on its own thread: the service shares this process's event loop, so an
    asyncio client would wait out a blocked loop too instead of noticing it.
    """
    credentials = channel_credentials(session_secrets().files("encryptsvc"))
    codes = []
    with grpc.secure_channel(address, credentials) as channel:
        stub: Any = PolicyServiceStub(channel)  # type: ignore[arg-type]
        request = policy_pb2.GetPolicyRequest(destination_id=destination_id)
        while True:
            try:
                stub.GetPolicy(request, timeout=2.0)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
            if stop.is_set():
                return codes


async def test_the_worst_sampling_request_leaves_get_policy_answering(
    start: StartService,
) -> None:
    """While a viewer's ListClassifications with samples at the caps is analysed, GetPolicy
    from encryptsvc keeps answering within its production deadline (2 s)."""
    service = await start("policysvc")
    admin = PolicyServiceStub(service.channel())
    workspace_id, destination_id = await enabled_destination(admin)
    for i in range(5):  # value matchers make the matching the expensive part
        await admin.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=workspace_id,
                add_matcher=policy_pb2.Matcher(
                    name=f"m{i}",
                    target=policy_pb2.MATCHER_TARGET_VALUE,
                    kind=policy_pb2.MATCH_KIND_REGEX,
                    pattern=rf"^\d{{3}}-\d{{2}}-\d{{{4 + i}}}$",
                    classification=policy_pb2.CLASSIFICATION_RED,
                ),
            )
        )
    viewer = as_person(service, {workspace_id: [Role.VIEWER]})
    stop = threading.Event()
    worst = asyncio.ensure_future(
        viewer.ListClassifications(
            policy_pb2.ListClassificationsRequest(
                workspace_id=workspace_id, sample_events=[worst_sample()]
            ),
            timeout=300,
        )
    )
    prober = asyncio.ensure_future(
        asyncio.to_thread(probe, service.peer_address, destination_id, stop)
    )
    outcome = await error_of_or_ok(worst)
    stop.set()
    codes = await prober
    assert (outcome, set(codes)) == (grpc.StatusCode.OK, {grpc.StatusCode.OK})


async def error_of_or_ok(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_watch_streams_are_capped_per_caller(start: StartService) -> None:
    """A person may hold MAX_WATCHES_PER_PERSON WatchPolicies streams at once: the next is
    RESOURCE_EXHAUSTED naming the cap, while another person still gets one."""
    service = await start("policysvc")
    admin = PolicyServiceStub(service.channel())
    workspace_id, destination_id = await enabled_destination(admin)
    request = policy_pb2.WatchPoliciesRequest(destination_ids=[destination_id])
    mallory = as_person(service, {workspace_id: [Role.VIEWER]})
    streams = [mallory.WatchPolicies(request) for _ in range(MAX_WATCHES_PER_PERSON)]
    for stream in streams:
        await stream.read()  # the RESYNC: the stream is open and counted
    extra = mallory.WatchPolicies(request)
    try:
        await extra.read()
        outcome = (grpc.StatusCode.OK, "")
    except grpc.aio.AioRpcError as exc:
        outcome = (exc.code(), exc.details() or "")
    other = admin.WatchPolicies(request)
    first: Any = await other.read()
    for stream in [*streams, other]:
        stream.cancel()
    assert (outcome[0], str(MAX_WATCHES_PER_PERSON) in outcome[1], first.kind) == (
        EXHAUSTED,
        True,
        common_pb2.CHANGE_KIND_RESYNC,
    )
