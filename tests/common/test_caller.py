"""Who is calling is passed, never assumed: no caller outside an RPC, and none with rights by
default."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc

from services.auditsvc.audit_log import AuditLog
from services.common.audit import AuditEntry
from services.common.security.auth import (
    ANONYMOUS,
    Caller,
    NoCallerError,
    Principal,
    PrincipalKind,
    current_caller,
)
from services.keysvc.keys import KeyManager
from services.keysvc.servicer import KeyServicer
from services.policysvc.catalog import Catalog
from services.policysvc.policy import Policies
from services.policysvc.privacy import Privacy
from tests.keysvc.fakes import FakeDirectory, FakeKeyStore

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_MODULES = [
    "services/keysvc/keys.py",
    "services/policysvc/catalog.py",
    "services/policysvc/privacy.py",
    "services/policysvc/policy.py",
    "services/auditsvc/audit_log.py",
]


def test_reading_the_caller_outside_an_rpc_raises() -> None:
    """Like temporalio's activity.info(): an unbound context raises, it does not grant."""
    with pytest.raises(NoCallerError, match="only valid while the interceptor serves an RPC"):
        contextvars.Context().run(current_caller)


@pytest.fixture
def store() -> FakeKeyStore:
    return FakeKeyStore()


@pytest_asyncio.fixture
async def bare_keysvc(store: FakeKeyStore) -> AsyncIterator[keys_pb2_grpc.KeyServiceStub]:
    """keysvc's real servicer and domain on a server without the interceptor: nothing
    authenticates the call, so nothing binds a caller."""
    manager = KeyManager(store, FakeDirectory({"d1": "ws_1"}), pending_ttl=timedelta(hours=1))
    server = grpc.aio.server()
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(manager, feed=None), server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield keys_pb2_grpc.KeyServiceStub(channel)
    finally:
        await channel.close(None)
        await server.stop(0)


async def test_an_unbound_call_is_refused_not_served_as_a_superuser(
    bare_keysvc: keys_pb2_grpc.KeyServiceStub, store: FakeKeyStore
) -> None:
    """A handler reached without the interceptor used to run as the default principal, a
    superuser, and delivered a private key; now reading its caller fails and nothing is made."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await bare_keysvc.GenerateKeyPair(keys_pb2.GenerateKeyPairRequest(destination_id="d1"))
    error = caught.value
    assert (error.code(), "NoCallerError" in str(error.details()), store.rows) == (
        grpc.StatusCode.UNKNOWN,
        True,
        {},
    )


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(cls).items()
        if inspect.iscoroutinefunction(fn) and not name.startswith("_")
    }


def test_every_domain_action_takes_its_caller_first() -> None:
    """A domain call cannot happen without a caller: each public action's first parameter
    after self is ``caller: Caller`` (the sweep's is its system caller)."""
    exempt = {("AuditLog", "checkpoint")}  # signs chain heads; writes no actor
    firsts = {
        (cls.__name__, name): list(sig.parameters.values())[1]
        for cls in (KeyManager, Catalog, Privacy, Policies, AuditLog)
        for name, sig in _public_methods(cls).items()
        if (cls.__name__, name) not in exempt
    }
    assert {k: p.annotation for k, p in firsts.items()} == {k: "Caller" for k in firsts}


def test_domain_modules_never_read_the_context() -> None:
    """Domain modules are handed their caller; only servicers call current_caller()."""
    readers = [m for m in DOMAIN_MODULES if "current_caller" in (ROOT / m).read_text()]
    assert readers == []


def test_principal_kind_round_trips() -> None:
    """Each kind survives its text form (logs, tokens), and the actor id follows the kind."""
    kinds = [PrincipalKind(kind.value) for kind in PrincipalKind]
    actors = [Principal("x", kind=kind).actor_id for kind in kinds]
    assert (kinds, actors) == (
        [PrincipalKind.PERSON, PrincipalKind.SERVICE, PrincipalKind.ANONYMOUS],
        ["x", "service:x", "x"],
    )


def test_the_anonymous_principal_is_no_superuser() -> None:
    """The one principal for calls without credentials holds nothing."""
    assert (ANONYMOUS.kind, ANONYMOUS.superuser, dict(ANONYMOUS.memberships)) == (
        PrincipalKind.ANONYMOUS,
        False,
        {},
    )


def test_a_system_caller_names_itself_and_gets_a_fresh_request_id() -> None:
    """Caller.system is a service principal; two of them are two requests."""
    first, second = Caller.system("keysvc-expiry-sweeper"), Caller.system("keysvc-expiry-sweeper")
    assert (first.actor_id, first.principal.superuser, first.request_id != second.request_id) == (
        "service:keysvc-expiry-sweeper",
        False,
        True,
    )


def test_an_audit_entry_requires_its_actor_and_request() -> None:
    """No default reads them from context: without them the entry cannot be built."""
    with pytest.raises(TypeError, match="actor_user_id"):
        AuditEntry(event_type="Thing Done", workspace_id="ws_1", target="t")  # type: ignore[call-arg]
    caller = Caller(Principal("alice"), "req-1")
    entry = AuditEntry.by(caller, event_type="Thing Done", workspace_id="ws_1", target="t")
    assert (entry.actor_user_id, entry.request_id) == ("alice", "req-1")
