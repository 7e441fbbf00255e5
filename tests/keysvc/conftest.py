"""keysvc fixtures: a keysvc wired to a real policysvc, a destination to key, and helpers."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import orjson
import pytest
import pytest_asyncio
from phiseal.keys.v1 import keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_dev.testing import RunningService, person
from tests.conftest import StartService

PERSON = person("user-1")
PASSPHRASE = "Tide-Pool 42 otters"


@dataclass
class Keys:
    """A served keysvc, the policysvc it asks, and one destination of one workspace."""

    stub: keys_pb2_grpc.KeyServiceStub
    service: RunningService
    policy: policy_pb2_grpc.PolicyServiceStub
    policy_service: RunningService
    database_url: str
    workspace_id: str
    destination_id: str

    async def new_destination(self, name: str = "Another webhook") -> str:
        reply = await self.policy.CreateDestination(
            policy_pb2.CreateDestinationRequest(
                workspace_id=self.workspace_id,
                name=name,
                type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
            )
        )
        return reply.destination.destination_id


async def serve_keys(
    start: StartService, database_url: str, policy: RunningService, **env: str
) -> RunningService:
    return await start("keysvc", POLICYSVC_ADDR=policy.peer_address, **env)


@pytest_asyncio.fixture
async def keys(start: StartService, database_url: str) -> Keys:
    """keysvc against a real policysvc on the test's database, with one fresh destination."""
    policy_service = await start("policysvc")
    policy = policy_pb2_grpc.PolicyServiceStub(policy_service.channel())
    workspace = await policy.CreateWorkspace(policy_pb2.CreateWorkspaceRequest(name="Clinic"))
    workspace_id = workspace.workspace.workspace_id
    await policy.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(
            workspace_id=workspace_id, eligible=True, baa_reference="BAA-2026-001"
        )
    )
    destination = await policy.CreateDestination(
        policy_pb2.CreateDestinationRequest(
            workspace_id=workspace_id,
            name="Webhook",
            type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
        )
    )
    service = await serve_keys(
        start, database_url, policy_service, KEYSVC_EXPIRY_SWEEP_SECONDS="0.2"
    )
    return Keys(
        stub=keys_pb2_grpc.KeyServiceStub(service.channel()),
        service=service,
        policy=policy,
        policy_service=policy_service,
        database_url=database_url,
        workspace_id=workspace_id,
        destination_id=destination.destination.destination_id,
    )


async def error_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and message an awaited stub call fails with."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    pytest.fail("the call succeeded but was expected to fail")


async def outbox(database_url: str) -> list[dict[str, Any]]:
    """keysvc's audit outbox, oldest first, as the JSON events written."""
    con = await asyncpg.connect(database_url)
    try:
        rows = await con.fetch("SELECT event FROM keysvc.audit_outbox ORDER BY seq")
    finally:
        await con.close()
    return [orjson.loads(row["event"]) for row in rows]


async def audited(database_url: str) -> list[tuple[str, str]]:
    """(event_type, outcome) of every keysvc audit row, oldest first."""
    return [(e["event_type"], e["outcome"]) for e in await outbox(database_url)]


def asn1(pem: str) -> list[str]:
    """The primitive values `openssl asn1parse` finds in a PEM, in order: OpenSSL's reading."""
    result = subprocess.run(
        ["openssl", "asn1parse"], input=pem, capture_output=True, text=True, check=True
    )
    values = []
    for line in result.stdout.splitlines():
        _, sep, rest = line.partition("prim: ")
        if sep:
            values.append(rest.split(":", 1)[1].strip() if ":" in rest else rest.strip())
    return values


def openssl_opens(pem: str, passphrase: str) -> bool:
    """Whether `openssl pkey` opens the PEM with the passphrase."""
    result = subprocess.run(
        ["openssl", "pkey", "-noout", "-passin", "env:PHISEAL_TEST_PASSPHRASE"],
        input=pem,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PHISEAL_TEST_PASSPHRASE": passphrase},
    )
    return result.returncode == 0
