"""encryptsvc believes no impostor: a peer port served by the wrong service's certificate is
refused before anything is asked, and a right service's answer to another question (a policy
or key of another destination, a kid naming another destination) fails the batch UNAVAILABLE
with an alarm log line. Never plaintext."""

from __future__ import annotations

import io

import grpc
import orjson
import pytest
from phiseal.common.v1 import common_pb2
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from phiseal.keys.v1 import keys_pb2
from phiseal.policy.v1 import policy_pb2

from phiseal_dev.localpg import free_port
from phiseal_dev.testing import RunningService
from services.common.server.logging import configure_logging
from tests.conftest import StartService
from tests.encryptsvc.impostors import Answers, serve_impostor
from tests.encryptsvc.keys import rsa_key

DESTINATION = "dst_asked"
EVENT = orjson.dumps({"messageId": "m-1", "traits": {"email": "jane@example.com"}})


async def _encryptsvc(start: StartService, port: int) -> RunningService:
    return await start(
        "encryptsvc",
        POLICYSVC_ADDR=f"127.0.0.1:{port}",
        KEYSVC_ADDR=f"127.0.0.1:{port}",
        ENCRYPTSVC_PEER_TIMEOUT_SECONDS="1",
    )


async def _call(encrypt: RunningService) -> grpc.StatusCode:
    """EncryptEvents as the producer; the code (OK only if no plaintext came back)."""
    stub = encrypt_pb2_grpc.EncryptServiceStub(encrypt.peer_channel("producer"))
    request = encrypt_pb2.EncryptEventsRequest(destination_id=DESTINATION, events=[EVENT])
    try:
        response = await stub.EncryptEvents(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    assert b"jane@example.com" not in response.SerializeToString(), "plaintext was sent"
    return grpc.StatusCode.OK


@pytest.mark.parametrize("identity", ["producer", "keysvc", "stranger"])
async def test_a_wrong_service_on_the_policysvc_port_is_refused(
    start: StartService, identity: str
) -> None:
    """A server on policysvc's port using the producer's (client-only), keysvc's or a
    stranger's certificate, saying encryption is disabled: encryptsvc refuses the handshake,
    asks it nothing, and the batch is UNAVAILABLE, not sent in plaintext."""
    port = free_port()
    answers = Answers()
    impostor = await serve_impostor(port, identity, answers)
    try:
        encrypt = await _encryptsvc(start, port)
        assert await _call(encrypt) == grpc.StatusCode.UNAVAILABLE
        assert answers.asked == []
    finally:
        await impostor.stop(None)


def _enabled(destination_id: str) -> policy_pb2.EncryptionPolicy:
    return policy_pb2.EncryptionPolicy(
        destination_id=destination_id,
        version=1,
        enabled=True,
        format=common_pb2.ENCRYPTION_FORMAT_JWE,
        fields=["traits.email"],
    )


def _key(destination_id: str, kid: str) -> keys_pb2.KeyVersion:
    return keys_pb2.KeyVersion(
        destination_id=destination_id,
        kid=kid,
        version=1,
        state=keys_pb2.KEY_STATE_ACTIVE,
        public_key_pem=rsa_key("attacker").public_pem,
    )


MISMATCHES = {
    "policy of another destination": Answers(
        policy=lambda d: policy_pb2.EncryptionPolicy(
            destination_id="dst_other", version=3, enabled=False
        )
    ),
    "key of another destination": Answers(
        policy=_enabled, key=lambda d: _key("dst_other", "dst_other.v1")
    ),
    "kid naming another destination": Answers(
        policy=_enabled, key=lambda d: _key(d, "dst_other.v1")
    ),
    "kid naming another version": Answers(policy=_enabled, key=lambda d: _key(d, f"{d}.v7")),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
async def test_an_answer_to_another_question_fails_the_batch(
    start: StartService, case: str
) -> None:
    """policysvc's and keysvc's own certificates, answering about another destination or key:
    UNAVAILABLE and a `peer_answer_mismatch` error log line naming the peer."""
    port = free_port()
    answers = MISMATCHES[case]
    identity = "policysvc" if case.startswith("policy") else "keysvc"
    # One impostor serves both APIs, so it must pass as both: the key cases use keysvc's port.
    policy_port = port if identity == "policysvc" else free_port()
    impostor = await serve_impostor(port, identity, answers)
    helper = None
    if identity == "keysvc":
        helper = await serve_impostor(policy_port, "policysvc", answers)
    logs = io.StringIO()
    configure_logging("info", "json", stream=logs)
    try:
        encrypt = await start(
            "encryptsvc",
            POLICYSVC_ADDR=f"127.0.0.1:{policy_port}",
            KEYSVC_ADDR=f"127.0.0.1:{port}",
            ENCRYPTSVC_PEER_TIMEOUT_SECONDS="1",
        )
        assert await _call(encrypt) == grpc.StatusCode.UNAVAILABLE
    finally:
        await impostor.stop(None)
        if helper is not None:
            await helper.stop(None)
    alarms = [
        line
        for line in map(orjson.loads, logs.getvalue().splitlines())
        if line.get("event") == "peer_answer_mismatch"
    ]
    assert alarms
    assert alarms[0]["level"] == "error"
    assert alarms[0]["peer"] == identity
    assert "jane" not in logs.getvalue()
