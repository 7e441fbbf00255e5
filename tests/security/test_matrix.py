"""The RPC x credential matrix over every RPC of every service, on the real stack.

Every RPC in the generated descriptors is called with no credentials, a malformed token, a
token signed by another Ed25519 key, an expired token, a token for another workspace, too small
a role, and the role it needs; service-only RPCs also as people and as every peer identity.
The denied PHI-related attempts must then be in auditsvc's log, attributed and token-free.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest_asyncio
from google.protobuf import json_format
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from phiseal_dev.testing import eventually, session_secrets
from services.common.security.auth import Role
from services.common.security.authz import WILDCARD
from tests.auditsvc.helpers import whole_log
from tests.encryptsvc.stack import PERSON
from tests.rules import ALL_RULES
from tests.security.calls import OK, call
from tests.security.conftest import Stack
from tests.security.world import Rpc, World, every_rpc

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
CASES = (
    "no credentials",
    "malformed",
    "bad signature",
    "expired",
    "other workspace",
    "too small a role",
    "allowed",
)
STRANGER = "stranger"  # a certificate from our CA that no allow-list names


def actor(rpc: Rpc) -> str:
    """Each RPC's matrix tokens carry their own subject, so their audit records are told apart."""
    return f"matrix-{rpc.name}"


@dataclass
class Matrix:
    world: World
    person: dict[tuple[str, str], grpc.StatusCode]
    peers: dict[tuple[str, str], grpc.StatusCode]
    tokens: list[str]
    details: dict[tuple[str, str], str]


@pytest_asyncio.fixture(scope="module")
async def matrix(stack: Stack) -> AsyncIterator[Matrix]:
    world = await World.create(stack, "Matrix")
    secrets = session_secrets()
    person: dict[tuple[str, str], grpc.StatusCode] = {}
    peers: dict[tuple[str, str], grpc.StatusCode] = {}
    details: dict[tuple[str, str], str] = {}
    tokens: list[str] = []
    for rpc in every_rpc():
        rule = ALL_RULES[rpc.method]
        service = stack.services[rpc.service]
        bare = service.channel(token=None)
        workspace = WILDCARD if rule.platform else world.workspace_id
        cases = secrets.tokens(workspace, rule.person or Role.ADMIN, subject=actor(rpc)).all()
        for case, token in cases.items():
            code, detail = await call(bare, rpc, world.request(rpc), token)
            person[(rpc.name, case)] = code
            details[(rpc.name, case)] = detail
            tokens += [token] if token else []
        for identity in sorted(rule.services | {STRANGER}):
            channel = service.peer_channel(identity)
            code, detail = await call(channel, rpc, world.request(rpc))
            peers[(rpc.name, identity)] = code
            details[(rpc.name, identity)] = detail
    yield Matrix(world, person, peers, tokens, details)


def expected_person_codes(rpc: Rpc) -> dict[tuple[str, str], grpc.StatusCode]:
    service_only = ALL_RULES[rpc.method].person is None
    codes = [UNAUTHENTICATED] * 4 + [DENIED] * 2 + [DENIED if service_only else OK]
    return {(rpc.name, case): code for case, code in zip(CASES, codes, strict=True)}


async def test_every_rpc_answers_each_credential_as_the_rules_say(matrix: Matrix) -> None:
    """UNAUTHENTICATED without valid credentials, PERMISSION_DENIED for another workspace or
    too small a role, success with the role needed; people are refused service-only RPCs."""
    expected: dict[tuple[str, str], grpc.StatusCode] = {}
    for rpc in every_rpc():
        expected.update(expected_person_codes(rpc))
    assert expected == matrix.person, {k: matrix.details[k] for k in matrix.person}


async def test_peer_identities_are_held_to_the_allow_lists(matrix: Matrix) -> None:
    """Over mutual TLS, each identity on an RPC's allow-list succeeds and an identity from our
    CA that no allow-list names is PERMISSION_DENIED on every RPC."""
    expected = {
        (rpc.name, identity): DENIED if identity == STRANGER else OK
        for rpc in every_rpc()
        for identity in ALL_RULES[rpc.method].services | {STRANGER}
    }
    assert expected == matrix.peers, {k: matrix.details[k] for k in matrix.peers}


async def test_the_matrix_covers_service_only_rpcs_with_their_peers(matrix: Matrix) -> None:
    """RecordEvents and EncryptEvents are reached by their peers and refused to people."""
    picked = {k: v for k, v in matrix.peers.items() if k[0] in ("RecordEvents", "EncryptEvents")}
    assert picked == {
        ("EncryptEvents", "producer"): OK,
        ("EncryptEvents", STRANGER): DENIED,
        ("RecordEvents", "keysvc"): OK,
        ("RecordEvents", "policysvc"): OK,
        ("RecordEvents", STRANGER): DENIED,
    }


async def _denials(stack: Stack, workspace_id: str) -> list[audit_pb2.AuditRecord]:
    audit = audit_pb2_grpc.AuditServiceStub(stack.audit.channel())
    flt = audit_pb2.AuditFilter(workspace_id=workspace_id, event_type="Access Denied")
    return await whole_log(audit, flt, "security matrix", PERSON)


async def test_denied_phi_attempts_arrive_at_auditsvc(matrix: Matrix, stack: Stack) -> None:
    """Each PHI-related RPC's two denials (another workspace, too small a role) are in the
    workspace's chain: "Access Denied", outcome DENIED, actor = the token's subject."""
    audited = [
        rpc for rpc in every_rpc() if ALL_RULES[rpc.method].phi and ALL_RULES[rpc.method].person
    ]
    expected = Counter({(actor(rpc), rpc.name, audit_pb2.OUTCOME_DENIED): 2 for rpc in audited})

    def seen(records: list[audit_pb2.AuditRecord]) -> Counter[tuple[str, str, int]]:
        return Counter(
            (r.event.actor_user_id, str(r.event.details["method"]), int(r.event.outcome))
            for r in records
            if r.event.actor_user_id.startswith("matrix-")
        )

    async def arrived() -> bool:
        return seen(await _denials(stack, matrix.world.workspace_id)) == expected

    await eventually(arrived, timeout=20)
    assert expected == seen(await _denials(stack, matrix.world.workspace_id))


async def test_denial_records_hold_no_token_text(matrix: Matrix, stack: Stack) -> None:
    """No token the matrix sent (nor any JWT-looking text) is in an audit record."""
    records = await _denials(stack, matrix.world.workspace_id)
    text = "\n".join(json_format.MessageToJson(r) for r in records)
    signatures = [t.split(".")[2] for t in matrix.tokens if t.count(".") == 2]
    leaked = [t for t in matrix.tokens + signatures if t in text]
    assert (len(records) > 0, leaked, "eyJ" in text) == (True, [], False)
