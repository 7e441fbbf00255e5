"""Authorization: the rules table covers every RPC; require() and the per-method gate decide."""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from pathlib import Path

import grpc
import phiseal
import pytest

from services.common.errors import PermissionDenied
from services.common.security.auth import ANONYMOUS, Caller, Principal, PrincipalKind, Role
from services.common.security.authz import (
    Access,
    AccessDenied,
    Rule,
    allowed,
    require,
    rules_markdown,
    satisfies,
    visible_workspaces,
)
from tests.common.conftest import SecureFake
from tests.common.secure import (
    Secrets,
    bearer,
    call_code,
    call_error,
    memberships,
    other_signing_key,
    person_channel,
)
from tests.rules import ALL_RULES, collect

ROOT = Path(__file__).resolve().parents[2]


def every_rpc() -> list[str]:
    """Full method names of every RPC in every generated *_pb2 module."""
    methods = []
    for info in pkgutil.walk_packages(phiseal.__path__, "phiseal."):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            methods += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return methods


def test_every_rpc_has_exactly_one_rule() -> None:
    """Nobody can add an RPC without deciding who may call it (and no rule is stale)."""
    rpcs = every_rpc()
    assert (sorted(set(rpcs)), len(rpcs)) == (sorted(ALL_RULES), len(set(rpcs)))


def test_each_service_rules_only_its_own_rpcs() -> None:
    """Each services/<name>/rules.py names only its own service's methods, and common names
    none: a rule in the wrong module would gate a method that server never serves."""
    for name in ("keysvc", "policysvc", "encryptsvc", "auditsvc"):
        rules = importlib.import_module(f"services.{name}.rules").RULES
        registered = importlib.import_module(f"services.{name}.app").SERVICE_NAME
        assert {m.split("/")[1] for m in rules} == {registered}
    authz = (ROOT / "services" / "common" / "security" / "authz.py").read_text()
    assert re.search(r"phiseal\.\w+\.v\d", authz) is None


def test_a_method_claimed_by_two_services_is_refused() -> None:
    """Collecting the rules refuses a method two services both declare."""
    rule = Rule(Role.VIEWER)
    with pytest.raises(AssertionError, match="two services"):
        collect({"/a.A/M": rule}, {"/a.A/M": rule})


def test_docs_roles_table_matches_the_rules() -> None:
    """docs/security.md shows the table generated from every service's rules, verbatim."""
    assert rules_markdown(ALL_RULES) in (ROOT / "docs" / "security.md").read_text()


def test_role_ladder() -> None:
    """viewer < editor < admin; auditor stands apart; admin may read the audit log."""
    table = {(h.value, n.value): satisfies(h, n) for h in Role for n in Role}
    assert [n for (h, n), ok in sorted(table.items()) if ok and h == "admin"] == [
        "admin",
        "auditor",
        "editor",
        "viewer",
    ]
    assert [h for (h, n), ok in sorted(table.items()) if ok and n == "auditor"] == [
        "admin",
        "auditor",
    ]
    assert [n for (h, n), ok in sorted(table.items()) if ok and h == "auditor"] == ["auditor"]
    assert [n for (h, n), ok in sorted(table.items()) if ok and h == "viewer"] == ["viewer"]


def test_require_passes_with_enough_role() -> None:
    alice = Principal("alice", memberships=memberships(ws_1=Role.EDITOR))
    require(alice, "ws_1", Role.VIEWER)
    assert allowed(alice, "ws_1", Role.EDITOR)


def test_require_denies_another_workspace() -> None:
    """A member of ws_1 is not a member of ws_2."""
    alice = Principal("alice", memberships=memberships(ws_1=Role.ADMIN))
    with pytest.raises(AccessDenied) as caught:
        require(alice, "ws_2", Role.VIEWER)
    assert caught.value.message == (
        "permission denied: this needs role viewer or higher in workspace ws_2; "
        "you are not a member of it"
    )


def test_require_denies_too_small_a_role() -> None:
    alice = Principal("alice", memberships=memberships(ws_1=Role.VIEWER))
    with pytest.raises(AccessDenied) as caught:
        require(alice, "ws_1", Role.EDITOR)
    assert caught.value.message == (
        "permission denied: this needs role editor or higher in workspace ws_1; "
        "you hold viewer there"
    )


def test_wildcard_membership_counts_everywhere() -> None:
    root = Principal("root", memberships=memberships(**{"*": Role.ADMIN}))
    require(root, "ws_9", Role.ADMIN)
    assert visible_workspaces(root, Role.VIEWER) is None


def test_services_and_superusers_pass_require() -> None:
    """A service's allow-list was checked per method; require() does not second-guess it."""
    require(Principal("encryptsvc", kind=PrincipalKind.SERVICE), "ws_1", Role.ADMIN)
    require(Principal("dev", superuser=True), "ws_1", Role.ADMIN)


def test_visible_workspaces_filters_by_role() -> None:
    alice = Principal("alice", memberships=memberships(ws_1=Role.ADMIN, ws_2=Role.AUDITOR))
    assert visible_workspaces(alice, Role.VIEWER) == frozenset({"ws_1"})


def gate_error(principal: Principal, method: str) -> str:
    with pytest.raises(PermissionDenied) as caught:
        Access(ALL_RULES).check_method(principal, method)
    return caught.value.message


def test_only_keysvc_and_policysvc_record_audit_events() -> None:
    """RecordEvents: keysvc and policysvc yes; encryptsvc and people no."""
    method = "/phiseal.audit.v1.AuditService/RecordEvents"
    Access(ALL_RULES).check_method(Principal("keysvc", kind=PrincipalKind.SERVICE), method)
    Access(ALL_RULES).check_method(Principal("policysvc", kind=PrincipalKind.SERVICE), method)
    root = Principal("root", memberships=memberships(**{"*": Role.ADMIN}))
    assert [
        gate_error(Principal("encryptsvc", kind=PrincipalKind.SERVICE), method),
        gate_error(root, method),
    ] == [
        "service encryptsvc is not allowed to call RecordEvents",
        "RecordEvents is for services only; people may not call it",
    ]


def test_encryptsvc_may_read_policies_and_keys_only() -> None:
    """encryptsvc's allow-list is exactly GetPolicy, WatchPolicies, GetPublicKey, WatchKeys."""
    allowed_methods = sorted(
        m.rsplit("/", 1)[-1] for m, rule in ALL_RULES.items() if "encryptsvc" in rule.services
    )
    assert allowed_methods == ["GetPolicy", "GetPublicKey", "WatchKeys", "WatchPolicies"]


def test_method_without_rule_is_denied() -> None:
    """Fail closed: an RPC nobody decided about is nobody's."""
    root = Principal("root", memberships=memberships(**{"*": Role.ADMIN}))
    assert "has no authorization rule" in gate_error(root, "/phiseal.new.v1.New/Thing")


def test_person_without_the_role_anywhere_is_denied_at_the_gate() -> None:
    """An auditor cannot even reach the domain code of a non-PHI read of policies."""
    audrey = Principal("audrey", memberships=memberships(ws_1=Role.AUDITOR))
    message = gate_error(audrey, "/phiseal.policy.v1.PolicyService/ListDestinations")
    assert message.startswith("permission denied: ListDestinations needs role viewer")


def test_phi_methods_leave_the_decision_to_the_domain() -> None:
    """On a PHI method the gate lets a person through so that the domain's denial names the
    workspace (and its audit record lands in that workspace's chain)."""
    audrey = Principal("audrey", memberships=memberships(ws_1=Role.AUDITOR))
    Access(ALL_RULES).check_method(audrey, "/phiseal.keys.v1.KeyService/GenerateKeyPair")


async def test_a_denial_without_a_workspace_is_logged_not_audited() -> None:
    """auditsvc refuses a record without a workspace, so none is written (the relay would
    stall on it); the access_denied log line remains."""
    seen: list[str] = []

    class Recorder:
        async def record_denial(
            self, caller: Caller, method: str, workspace_id: str, reason: str
        ) -> None:
            seen.append(workspace_id)

    access = Access(ALL_RULES, auditor=Recorder())
    alice = Caller(Principal("alice", memberships=memberships(ws_1=Role.VIEWER)), "r1")
    await access.denied(
        alice, "/phiseal.keys.v1.KeyService/GenerateKeyPair", PermissionDenied("no"), None
    )
    assert seen == []


def test_creating_a_workspace_needs_platform_admin() -> None:
    """An admin of one workspace may not create workspaces."""
    alice = Principal("alice", memberships=memberships(ws_1=Role.ADMIN))
    message = gate_error(alice, "/phiseal.policy.v1.PolicyService/CreateWorkspace")
    assert "in every workspace" in message


def test_health_and_reflection_are_open() -> None:
    Access(ALL_RULES).check_method(ANONYMOUS, "/grpc.health.v1.Health/Check")
    Access(ALL_RULES).check_method(
        ANONYMOUS, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    )


def test_the_anonymous_principal_has_no_rights() -> None:
    """ANONYMOUS (no credentials) passes neither a method's gate nor a workspace check."""
    assert (
        gate_error(ANONYMOUS, "/phiseal.policy.v1.PolicyService/GetWorkspace"),
        allowed(ANONYMOUS, "ws_1", Role.VIEWER),
        visible_workspaces(ANONYMOUS, Role.VIEWER),
    ) == ("GetWorkspace is for services only; people may not call it", False, frozenset())


# The same checks end to end, over TLS, against the fake service's EditWorkspace (editor, PHI).


async def edit(secure_fake: SecureFake, secrets: Secrets, token: str, ws: str) -> grpc.StatusCode:
    async with person_channel(secure_fake.server.port, secrets.ca_pem) as channel:
        return await call_code(channel, "EditWorkspace", service=ws, metadata=bearer(token))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("malformed", grpc.StatusCode.UNAUTHENTICATED),
        ("bad_signature", grpc.StatusCode.UNAUTHENTICATED),
        ("expired", grpc.StatusCode.UNAUTHENTICATED),
        ("wrong_audience", grpc.StatusCode.UNAUTHENTICATED),
        ("another_workspace", grpc.StatusCode.PERMISSION_DENIED),
        ("too_small_a_role", grpc.StatusCode.PERMISSION_DENIED),
        ("allowed", grpc.StatusCode.OK),
    ],
)
async def test_token_matrix(
    secure_fake: SecureFake, secrets: Secrets, case: str, expected: grpc.StatusCode
) -> None:
    """Each kind of token gets the status it deserves on a workspace action."""
    minter = secrets.minter
    tokens = {
        "malformed": "abc.def",
        "bad_signature": other_signing_key().mint("alice", {"ws_1": ["editor"]}),
        "expired": minter.mint(
            "alice", {"ws_1": ["editor"]}, ttl_seconds=60, now=time.time() - 3600
        ),
        "wrong_audience": minter.mint("alice", {"ws_1": ["editor"]}, aud="elsewhere"),
        "another_workspace": minter.mint("alice", {"ws_2": ["editor"]}),
        # Editor elsewhere passes the gate; the domain's require() then refuses ws_1.
        "too_small_a_role": minter.mint("alice", {"ws_1": ["viewer"], "ws_2": ["editor"]}),
        "allowed": minter.mint("alice", {"ws_1": ["editor"]}),
    }
    assert await edit(secure_fake, secrets, tokens[case], "ws_1") == expected


async def test_denied_phi_attempt_is_audited(secure_fake: SecureFake, secrets: Secrets) -> None:
    """A PERMISSION_DENIED on a PHI method reaches the DenialAuditor with actor and workspace."""
    token = secrets.minter.mint("mallory", {"ws_1": ["viewer"], "ws_2": ["editor"]})
    await edit(secure_fake, secrets, token, "ws_1")
    assert secure_fake.auditor.denials == [("mallory", "EditWorkspace", "ws_1")]


async def test_unauthenticated_attempt_is_not_attributed(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """Without a verified identity there is nobody to attribute: logged, not audited."""
    await edit(secure_fake, secrets, "abc.def", "ws_1")
    assert secure_fake.auditor.denials == []


async def test_denial_message_says_what_is_needed(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    token = secrets.minter.mint("alice", {"ws_1": ["viewer"], "ws_2": ["editor"]})
    async with person_channel(secure_fake.server.port, secrets.ca_pem) as channel:
        code, details = await call_error(
            channel, "EditWorkspace", service="ws_1", metadata=bearer(token)
        )
    assert (code, details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "permission denied: this needs role editor or higher in workspace ws_1; "
        "you hold viewer there",
    )


async def test_token_is_not_echoed_in_refusal(secure_fake: SecureFake, secrets: Secrets) -> None:
    """The refusal of a bad token never contains the token."""
    token = other_signing_key().mint("alice", {"ws_1": ["editor"]})
    async with person_channel(secure_fake.server.port, secrets.ca_pem) as channel:
        _, details = await call_error(
            channel, "EditWorkspace", service="ws_1", metadata=bearer(token)
        )
    assert (token in details, token.split(".")[2] in details) == (False, False)
