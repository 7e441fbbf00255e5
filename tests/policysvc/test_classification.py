"""Classification through the gRPC API: default matchers, custom matchers, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import grpc
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from phiseal.policy.v1.policy_pb2_grpc import PolicyServiceStub

from services.policysvc.classification import DEFAULT_MATCHERS
from tests.policysvc.conftest import error_of, event_types, new_workspace, status_of

SAMPLES = (Path(__file__).parent.parent / "data" / "sample_events.jsonl").read_text().splitlines()
RED = policy_pb2.CLASSIFICATION_RED
YELLOW = policy_pb2.CLASSIFICATION_YELLOW
GREEN = policy_pb2.CLASSIFICATION_GREEN
KEY = policy_pb2.MATCHER_TARGET_KEY
VALUE = policy_pb2.MATCHER_TARGET_VALUE
EXACT = policy_pb2.MATCH_KIND_EXACT
REGEX = policy_pb2.MATCH_KIND_REGEX


async def classify(
    stub: PolicyServiceStub,
    workspace_id: str,
    *,
    samples: list[str] | None = None,
    paths: list[str] | None = None,
) -> dict[str, policy_pb2.FieldClassification]:
    """Every known field's classification, by path (one page of up to 500)."""
    reply = await stub.ListClassifications(
        policy_pb2.ListClassificationsRequest(
            workspace_id=workspace_id,
            sample_events=samples or [],
            paths=paths or [],
            page=common_pb2.PageRequest(page_size=500),
        )
    )
    return {f.path: f for f in reply.fields}


def levels(fields: dict[str, policy_pb2.FieldClassification]) -> dict[str, int]:
    return {path: f.classification for path, f in fields.items()}


async def add_matcher(
    stub: PolicyServiceStub,
    workspace_id: str,
    *,
    name: str = "custom",
    target: int = KEY,
    kind: int = EXACT,
    pattern: str = "plan",
    classification: int = YELLOW,
) -> policy_pb2.SetClassificationResponse:
    return await stub.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id,
            add_matcher=policy_pb2.Matcher(
                name=name,
                target=target,  # type: ignore[arg-type]
                kind=kind,  # type: ignore[arg-type]
                pattern=pattern,
                classification=classification,  # type: ignore[arg-type]
            ),
        )
    )


async def override(
    stub: PolicyServiceStub, workspace_id: str, path: str, classification: int
) -> policy_pb2.SetClassificationResponse:
    return await stub.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id,
            override=policy_pb2.PathOverride(
                path=path,
                classification=classification,  # type: ignore[arg-type]
            ),
        )
    )


async def test_default_matchers_classify_the_sample_events(stub: PolicyServiceStub) -> None:
    """The shipped sample events classify as the default matcher table says."""
    workspace_id = await new_workspace(stub)
    found = levels(await classify(stub, workspace_id, samples=SAMPLES))
    expected = {
        "traits.email": YELLOW,
        "context.traits.phone": YELLOW,
        "traits.address.zipcode": YELLOW,
        "traits.birthdate": YELLOW,
        "properties.medication": YELLOW,
        "context.ip": YELLOW,
        "traits.plan": GREEN,
        "properties.copay": YELLOW,
        "properties.clinic": GREEN,
    }
    assert {path: found[path] for path in expected} == expected


async def test_a_password_key_is_red(stub: PolicyServiceStub) -> None:
    """A `password` key classifies red, deciding by the default matcher 'password'."""
    workspace_id = await new_workspace(stub)
    sample = json.dumps({"traits": {"password": "hunter2", "Pass-Word": "x"}})
    found = await classify(stub, workspace_id, samples=[sample])
    decided = {p: (f.classification, f.source, f.matcher_id) for p, f in found.items()}
    default = (RED, policy_pb2.DECISION_SOURCE_DEFAULT_MATCHER, "default:password")
    assert decided == {"traits.password": default, "traits.Pass-Word": default}


async def test_key_matching_ignores_case_spaces_underscores_and_dashes(
    stub: PolicyServiceStub,
) -> None:
    """zip_code, zipCode, "Zip Code" and zip-code all match the default matcher zipcode."""
    workspace_id = await new_workspace(stub)
    paths = ["traits.zip_code", "traits.zipCode", 'traits["Zip Code"]', "properties.zip-code"]
    found = await classify(stub, workspace_id, paths=paths)
    assert {p: found[p].matcher_id for p in paths} == dict.fromkeys(paths, "default:zipcode")


async def test_unmatched_path_is_green_with_source_none(stub: PolicyServiceStub) -> None:
    """A path no matcher matches is green, decided by nothing."""
    workspace_id = await new_workspace(stub)
    field = (await classify(stub, workspace_id, paths=["properties.clinic"]))["properties.clinic"]
    assert (field.classification, field.source) == (GREEN, policy_pb2.DECISION_SOURCE_NONE)


async def test_matchers_list_defaults_first(stub: PolicyServiceStub) -> None:
    """ListClassifications returns the default matchers (key matchers, then value detectors),
    then the workspace's own."""
    workspace_id = await new_workspace(stub)
    added = await add_matcher(stub, workspace_id)
    reply = await stub.ListClassifications(
        policy_pb2.ListClassificationsRequest(workspace_id=workspace_id)
    )
    defaults = [m for m in reply.matchers if m.is_default]
    assert (len(defaults), reply.matchers[-1]) == (len(DEFAULT_MATCHERS), added.matcher)
    assert reply.matchers[0].matcher_id == "default:social security number"


async def test_sample_paths_are_remembered_without_values(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """Paths seen in samples stay known; no sampled value reaches the database."""
    workspace_id = await new_workspace(stub)
    sample = json.dumps({"traits": {"email": "secret.person@example.com"}})
    await classify(stub, workspace_id, samples=[sample])
    later = await classify(stub, workspace_id)
    con = await asyncpg.connect(database_url)
    try:
        rows = []
        for table in ("sample_paths", "value_matches", "audit_outbox"):
            rows += await con.fetch(f"SELECT * FROM policysvc.{table}")  # noqa: S608
    finally:
        await con.close()
    dump = "\n".join(str(list(row.values())) for row in rows)
    assert list(later) == ["traits.email"]
    assert "secret.person" not in dump


async def test_override_wins_over_default_matcher(stub: PolicyServiceStub) -> None:
    """An override to green beats the default yellow for that path, and says who set it."""
    workspace_id = await new_workspace(stub)
    reply = await override(stub, workspace_id, "traits.email", GREEN)
    assert (reply.field.classification, reply.field.source) == (
        GREEN,
        policy_pb2.DECISION_SOURCE_OVERRIDE,
    )
    assert reply.field.decided_by == "override by dev-admin"


async def test_removing_override_restores_matcher_decision(stub: PolicyServiceStub) -> None:
    """CLASSIFICATION_UNSPECIFIED removes an override; the default matcher decides again."""
    workspace_id = await new_workspace(stub)
    await override(stub, workspace_id, "traits.email", GREEN)
    reply = await override(
        stub, workspace_id, "traits.email", policy_pb2.CLASSIFICATION_UNSPECIFIED
    )
    assert (reply.field.classification, reply.field.matcher_id) == (YELLOW, "default:email")


async def test_override_with_malformed_path_is_invalid(stub: PolicyServiceStub) -> None:
    """An override's path must parse and lie under context, traits or properties."""
    workspace_id = await new_workspace(stub)
    code = await status_of(override(stub, workspace_id, "userId", YELLOW))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_custom_key_matcher_wins_over_default(stub: PolicyServiceStub) -> None:
    """A custom KEY matcher beats the default matcher for the same key."""
    workspace_id = await new_workspace(stub)
    added = await add_matcher(stub, workspace_id, pattern="E-Mail", classification=GREEN)
    field = (await classify(stub, workspace_id, paths=["traits.email"]))["traits.email"]
    assert (field.classification, field.matcher_id) == (GREEN, added.matcher.matcher_id)
    assert added.matcher.matcher_id.startswith("mt_")


async def test_override_wins_over_custom_matcher(stub: PolicyServiceStub) -> None:
    """An override beats a custom matcher."""
    workspace_id = await new_workspace(stub)
    await add_matcher(stub, workspace_id, pattern="plan", classification=RED)
    reply = await override(stub, workspace_id, "traits.plan", YELLOW)
    assert reply.field.classification == YELLOW


async def test_most_restrictive_custom_matcher_wins(stub: PolicyServiceStub) -> None:
    """Of two custom matchers on one key, red beats yellow whichever came first."""
    workspace_id = await new_workspace(stub)
    await add_matcher(stub, workspace_id, pattern="plan", classification=YELLOW)
    red = await add_matcher(stub, workspace_id, kind=REGEX, pattern="^pl", classification=RED)
    field = (await classify(stub, workspace_id, paths=["traits.plan"]))["traits.plan"]
    assert (field.classification, field.matcher_id) == (RED, red.matcher.matcher_id)


async def test_value_regex_matcher_classifies_sampled_path(stub: PolicyServiceStub) -> None:
    """A VALUE matcher classifies a path where a sampled value matched, and keeps doing so."""
    workspace_id = await new_workspace(stub)
    added = await add_matcher(
        stub,
        workspace_id,
        target=VALUE,
        kind=REGEX,
        pattern=r"^\d{3}-\d{2}-\d{4}$",
        classification=RED,
    )
    samples = [
        json.dumps({"properties": {"ref": "123-45-6789", "other": "abc"}}),
        json.dumps({"properties": {"ref": "n/a"}}),
    ]
    now = await classify(stub, workspace_id, samples=samples)
    later = await classify(stub, workspace_id)
    assert (now["properties.ref"].matcher_id, later["properties.ref"].matcher_id) == (
        added.matcher.matcher_id,
        added.matcher.matcher_id,
    )
    assert later["properties.other"].classification == GREEN


async def test_value_exact_matcher_matches_numbers_as_json(stub: PolicyServiceStub) -> None:
    """An EXACT VALUE matcher compares a number's JSON text."""
    workspace_id = await new_workspace(stub)
    await add_matcher(stub, workspace_id, target=VALUE, pattern="42", classification=RED)
    found = await classify(stub, workspace_id, samples=[json.dumps({"traits": {"n": 42}})])
    assert found["traits.n"].classification == RED


async def test_pathological_regex_returns(stub: PolicyServiceStub) -> None:
    """(a+)+$ against a long 'aaa…b' value finishes (RE2 runs in linear time)."""
    workspace_id = await new_workspace(stub)
    await add_matcher(
        stub, workspace_id, target=VALUE, kind=REGEX, pattern="(a+)+$", classification=RED
    )
    sample = json.dumps({"properties": {"x": "a" * 50_000 + "b", "y": "a" * 50_000}})
    found = await classify(stub, workspace_id, samples=[sample])
    assert levels(found) == {"properties.x": GREEN, "properties.y": RED}


async def test_backreference_regex_is_invalid(stub: PolicyServiceStub) -> None:
    """A pattern RE2 cannot run (a backreference) is INVALID_ARGUMENT saying why."""
    workspace_id = await new_workspace(stub)
    code, message = await error_of(add_matcher(stub, workspace_id, kind=REGEX, pattern=r"(a)\1"))
    assert (code, "RE2" in message) == (grpc.StatusCode.INVALID_ARGUMENT, True)


async def test_broken_regex_error_does_not_quote_the_pattern(stub: PolicyServiceStub) -> None:
    """RE2 quotes the broken part of a pattern; the message names the problem, never the
    pattern (a value matcher's pattern can be an exact PHI value)."""
    workspace_id = await new_workspace(stub)
    pattern = r"(123-45-6789|jane\.doe@example\.com"
    code, message = await error_of(
        add_matcher(stub, workspace_id, target=VALUE, kind=REGEX, pattern=pattern)
    )
    leaked = [part for part in ("123-45-6789", "jane", "example") if part in message]
    assert (code, "missing )" in message, leaked) == (grpc.StatusCode.INVALID_ARGUMENT, True, [])


async def test_oversized_regex_is_invalid(stub: PolicyServiceStub) -> None:
    """A pattern whose compiled program exceeds the memory budget is INVALID_ARGUMENT."""
    workspace_id = await new_workspace(stub)
    code = await status_of(add_matcher(stub, workspace_id, kind=REGEX, pattern=r"\pL{1000}"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_matcher_without_target_is_invalid(stub: PolicyServiceStub) -> None:
    """A matcher needs a target, a kind, a pattern and a classification."""
    workspace_id = await new_workspace(stub)
    code = await status_of(add_matcher(stub, workspace_id, target=0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_101st_custom_matcher_is_refused(stub: PolicyServiceStub, database_url: str) -> None:
    """A workspace holds at most 100 custom matchers: the 101st is RESOURCE_EXHAUSTED."""
    workspace_id = await new_workspace(stub)
    for i in range(100):
        await add_matcher(stub, workspace_id, name=f"m{i}", pattern=f"key{i}")
    before = await event_types(database_url)
    code = await status_of(add_matcher(stub, workspace_id, name="one too many"))
    assert (code, await event_types(database_url)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        before,
    )


async def test_remove_matcher_forgets_it(stub: PolicyServiceStub) -> None:
    """A removed custom matcher no longer decides anything."""
    workspace_id = await new_workspace(stub)
    added = await add_matcher(stub, workspace_id, pattern="plan", classification=RED)
    await stub.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id, remove_matcher_id=added.matcher.matcher_id
        )
    )
    field = (await classify(stub, workspace_id, paths=["traits.plan"]))["traits.plan"]
    assert field.classification == GREEN


async def test_remove_default_matcher_is_refused(stub: PolicyServiceStub) -> None:
    """Default matchers cannot be removed (FAILED_PRECONDITION); overrides are the way."""
    workspace_id = await new_workspace(stub)
    code = await status_of(
        stub.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=workspace_id, remove_matcher_id="default:email"
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_remove_unknown_matcher_is_not_found(stub: PolicyServiceStub) -> None:
    """Removing a matcher the workspace does not have answers NOT_FOUND."""
    workspace_id = await new_workspace(stub)
    code = await status_of(
        stub.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=workspace_id, remove_matcher_id="mt_00000000000000000000"
            )
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_set_classification_without_change_is_invalid(stub: PolicyServiceStub) -> None:
    """SetClassification must carry one of its changes."""
    workspace_id = await new_workspace(stub)
    code = await status_of(
        stub.SetClassification(policy_pb2.SetClassificationRequest(workspace_id=workspace_id))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_classification_changes_are_audited(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """Override, add and remove each write their audit row; the pattern is not in it."""
    workspace_id = await new_workspace(stub, eligible=False)
    await override(stub, workspace_id, "traits.plan", YELLOW)
    added = await add_matcher(stub, workspace_id, target=VALUE, pattern="123-45-6789")
    await stub.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id, remove_matcher_id=added.matcher.matcher_id
        )
    )
    con = await asyncpg.connect(database_url)
    try:
        events = [
            json.loads(r["event"])
            for r in await con.fetch("SELECT event FROM policysvc.audit_outbox ORDER BY seq")
        ]
    finally:
        await con.close()
    assert [e["event_type"] for e in events] == [
        "Workspace Created",
        "Privacy Classification Modified",
        "Privacy Matcher Added",
        "Privacy Matcher Removed",
    ]
    assert events[1]["details"] == {
        "path": "traits.plan",
        "classification": "yellow",
        "previous_override": "none",
    }
    assert "123-45-6789" not in json.dumps(events)


async def test_malformed_sample_is_invalid(stub: PolicyServiceStub, database_url: str) -> None:
    """A sample that is not a JSON object is INVALID_ARGUMENT naming its index, not content."""
    workspace_id = await new_workspace(stub)
    code, message = await error_of(
        stub.ListClassifications(
            policy_pb2.ListClassificationsRequest(
                workspace_id=workspace_id, sample_events=["{}", "[secret-value"]
            )
        )
    )
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "sample_events[1] is not valid JSON "
        "(unexpected character, expected a JSON value at byte 1)",
    )


async def test_classifications_page(stub: PolicyServiceStub) -> None:
    """Known paths come sorted in pages; the tokens walk through all of them once."""
    workspace_id = await new_workspace(stub)
    keys = [f"k{i}" for i in range(5)]
    await classify(stub, workspace_id, samples=[json.dumps({"traits": dict.fromkeys(keys, 1)})])
    paths = [f"traits.{key}" for key in keys]
    seen: list[str] = []
    token = ""
    while True:
        reply = await stub.ListClassifications(
            policy_pb2.ListClassificationsRequest(
                workspace_id=workspace_id,
                page=common_pb2.PageRequest(page_size=2, page_token=token),
            )
        )
        seen.extend(f.path for f in reply.fields)
        token = reply.next_page_token
        if not token:
            break
    assert seen == paths


async def test_list_classifications_of_unknown_workspace_is_not_found(
    stub: PolicyServiceStub,
) -> None:
    """ListClassifications of a missing workspace answers NOT_FOUND."""
    code = await status_of(
        stub.ListClassifications(
            policy_pb2.ListClassificationsRequest(workspace_id="ws_00000000000000000000")
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_value_detection_is_remembered_without_the_value(
    stub: PolicyServiceStub, database_url: str
) -> None:
    """A path a built-in detector flagged stays flagged in later listings; only the detector's
    name is stored, never the value."""
    workspace_id = await new_workspace(stub)
    sample = json.dumps({"properties": {"f9": "6011111111111117", "k": "jane@example.com"}})
    now = await classify(stub, workspace_id, samples=[sample])
    later = await classify(stub, workspace_id)
    con = await asyncpg.connect(database_url)
    try:
        rows = await con.fetch("SELECT * FROM policysvc.sample_signals")
    finally:
        await con.close()
    dump = "\n".join(str(list(row.values())) for row in rows)
    decided = {p: (f.classification, f.matcher_id, f.decided_on) for p, f in later.items()}
    assert decided == {
        "properties.f9": (RED, "default:value:card", VALUE),
        "properties.k": (YELLOW, "default:value:email", VALUE),
    }
    assert levels(now) == levels(later)
    assert ("6011111111111117" in dump, "jane" in dump) == (False, False)
