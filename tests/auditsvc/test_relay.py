"""The outbox relay: every record arrives exactly once, through outages and crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import asyncpg
import grpc
import orjson
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_dev.dbroles import runtime_url
from phiseal_dev.localpg import free_port
from phiseal_dev.testing import RunningService, eventually, session_secrets
from services.common.audit import AuditEntry
from services.common.data.outbox import append_to_outbox
from services.common.data.outbox_relay import to_proto
from services.common.server.health import ALARMS
from tests.auditsvc.helpers import PERSON_MD, stub
from tests.conftest import StartService

WS = "ws_relay"
EVENT_TYPE = "Destination Created"


async def write_outbox(database_url: str, schema: str, count: int) -> list[str]:
    """Commits ``count`` outbox rows as the service's own transaction would."""
    con = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    entries = [
        AuditEntry(
            event_type=EVENT_TYPE,
            workspace_id=WS,
            target=f"destination/dst_{i}",
            actor_user_id="alice@example.com",
            request_id=f"req-{i}",
            details={"name_length": i},
        )
        for i in range(count)
    ]
    try:
        async with con.transaction():
            for entry in entries:
                await append_to_outbox(con, entry, schema)
    finally:
        await con.close()
    return [e.event_id for e in entries]


async def recorded_ids(audit: audit_pb2_grpc.AuditServiceStub) -> list[str]:
    page = await audit.QueryEvents(
        audit_pb2.QueryEventsRequest(
            filter=audit_pb2.AuditFilter(workspace_id=WS, event_type=EVENT_TYPE),
            page=common_pb2.PageRequest(page_size=500),
        )
    )
    return [r.event.event_id for r in page.records]


async def arrived(audit: audit_pb2_grpc.AuditServiceStub, expected: list[str]) -> None:
    async def check() -> bool:
        return len(await recorded_ids(audit)) >= len(expected)

    await eventually(check)


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    status: int = response.status
    return status


def test_outbox_rows_become_wire_events() -> None:
    """An outbox row converts to an AuditEvent with its outcome and details."""
    entry = AuditEntry(
        event_type=EVENT_TYPE,
        workspace_id=WS,
        target="destination/d",
        actor_user_id="alice",
        request_id="req-1",
        details={"fields": ["traits.email"]},
    )
    event = to_proto(entry.to_json("policysvc"))
    assert (event.outcome, event.service, json_format.MessageToDict(event.details)) == (
        audit_pb2.OUTCOME_SUCCEEDED,
        "policysvc",
        {"fields": ["traits.email"]},
    )


async def test_relay_delivers_on_commit(
    start: StartService, auditsvc: RunningService, database_url: str
) -> None:
    """Rows committed to policysvc's outbox reach auditsvc and are marked delivered."""
    await start("policysvc", AUDITSVC_ADDR=auditsvc.peer_address, OUTBOX_POLL_SECONDS="30")
    ids = await write_outbox(database_url, "policysvc", 3)
    audit = stub(auditsvc.channel())
    await arrived(audit, ids)
    con = await asyncpg.connect(database_url, server_settings={"search_path": "policysvc"})

    async def pending() -> int:
        sql = "SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL"
        return int(await con.fetchval(sql))

    async def all_marked() -> bool:
        return await pending() == 0

    try:
        # auditsvc acknowledges before the relay commits its mark: the mark follows shortly.
        await eventually(all_marked)
        left = await pending()
    finally:
        await con.close()
    assert (await recorded_ids(audit), left) == (ids, 0)


async def quarantined(database_url: str, schema: str) -> list[tuple[str, str]]:
    """(event_id, reason) of the quarantined rows, oldest first."""
    con = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        rows = await con.fetch("SELECT event_id, reason FROM audit_outbox_quarantine ORDER BY seq")
    finally:
        await con.close()
    return [(str(r["event_id"]), r["reason"]) for r in rows]


async def alarms_status(service: RunningService) -> tuple[int, int]:
    """(overall, phiseal.alarms) health after a fresh check."""
    await service.server.monitor.check_once()
    async with grpc.aio.insecure_channel(service.health_address) as channel:
        stub_ = health_pb2_grpc.HealthStub(channel)
        overall = await stub_.Check(health_pb2.HealthCheckRequest(service=""))
        alarm = await stub_.Check(health_pb2.HealthCheckRequest(service=ALARMS))
    return overall.status, alarm.status


async def test_an_unreadable_row_is_quarantined_and_the_rest_delivered(
    start: StartService, auditsvc: RunningService, database_url: str
) -> None:
    """A row the relay cannot turn into an event (a field this version does not know) moves to
    the quarantine table instead of stalling the relay; the rows behind it are delivered."""
    (odd,) = await write_outbox(database_url, "policysvc", 1)
    con = await asyncpg.connect(database_url, server_settings={"search_path": "policysvc"})
    try:
        await con.execute(
            "UPDATE audit_outbox SET event = event || '{\"unknown_field\": 1}'::jsonb"
        )
    finally:
        await con.close()
    behind = await write_outbox(database_url, "policysvc", 2)
    await start("policysvc", AUDITSVC_ADDR=auditsvc.peer_address, OUTBOX_POLL_SECONDS="0.05")
    audit = stub(auditsvc.channel())
    await arrived(audit, behind)

    async def moved() -> list[str]:
        return [i for i, _ in await quarantined(database_url, "policysvc")]

    # The relay quarantines in the transaction that marks the batch delivered, which commits
    # just after auditsvc answered: the records can be seen there a moment before it.
    assert await eventually(moved, what="the unreadable row quarantined") == [odd]
    assert set(await recorded_ids(audit)) == set(behind)


async def test_an_entry_auditsvc_refuses_is_quarantined_and_delivery_goes_on(
    start: StartService, auditsvc: RunningService, database_url: str
) -> None:
    """Issue 13 item 5: an outbox entry auditsvc refuses (a 600-character workspace id, as a
    denial could make before issue 13) no longer blocks the records behind it: they are
    delivered, it waits in the quarantine table with auditsvc's reason, and the relay raises
    the alarm (phiseal.alarms NOT_SERVING) while policysvc itself keeps SERVING."""
    policysvc = await start(
        "policysvc",
        AUDITSVC_ADDR=auditsvc.peer_address,
        OUTBOX_POLL_SECONDS="0.05",
        OUTBOX_MAX_AGE_SECONDS="0.5",
    )
    bad = AuditEntry(
        event_type="Access Denied",
        workspace_id="w" * 600,
        target="phiseal.policy.v1.PolicyService/GetPolicy",
        actor_user_id="mallory",
        request_id="r1",
    )
    con = await asyncpg.connect(database_url, server_settings={"search_path": "policysvc"})
    try:
        # Written as append_to_outbox did before it checked entries.
        await con.execute(
            "INSERT INTO audit_outbox (event_id, event) VALUES ($1, $2::jsonb)",
            uuid.UUID(bad.event_id),
            orjson.dumps(bad.to_json("policysvc")).decode(),
        )
    finally:
        await con.close()
    ids = await write_outbox(database_url, "policysvc", 3)
    audit = stub(auditsvc.channel())
    await arrived(audit, ids)

    async def alarmed() -> bool:
        return await alarms_status(policysvc) == (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )

    await eventually(alarmed)
    ((event_id, reason),) = await quarantined(database_url, "policysvc")
    assert (event_id, "workspace_id must be printable text" in reason) == (bad.event_id, True)
    assert await recorded_ids(audit) == ids


async def test_redelivery_is_deduplicated(
    start: StartService, auditsvc: RunningService, database_url: str
) -> None:
    """Rows sent again (a crash between ack and commit) still leave one record each."""
    await start("keysvc", AUDITSVC_ADDR=auditsvc.peer_address)
    ids = await write_outbox(database_url, "keysvc", 2)
    audit = stub(auditsvc.channel())
    await arrived(audit, ids)
    con = await asyncpg.connect(database_url, server_settings={"search_path": "keysvc"})
    try:
        await con.execute("UPDATE audit_outbox SET delivered_at = NULL")
        await con.execute("NOTIFY keysvc_audit_outbox")

        async def redelivered() -> bool:
            left = await con.fetchval(
                "SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL"
            )
            return bool(left == 0)

        await eventually(redelivered)
    finally:
        await con.close()
    assert await recorded_ids(audit) == ids


async def outbox_ids(database_url: str, schema: str) -> dict[str, str]:
    """event_id -> workspace_id of every row in ``schema``'s outbox."""
    con = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        rows = await con.fetch("SELECT event_id, event->>'workspace_id' AS ws FROM audit_outbox")
    finally:
        await con.close()
    return {str(r["event_id"]): r["ws"] for r in rows}


async def audited_ids(audit: audit_pb2_grpc.AuditServiceStub, workspaces: set[str]) -> list[str]:
    """Every event id auditsvc holds for ``workspaces`` (duplicates would show twice)."""
    found: list[str] = []
    for workspace in sorted(workspaces):
        page = await audit.QueryEvents(
            audit_pb2.QueryEventsRequest(
                filter=audit_pb2.AuditFilter(workspace_id=workspace),
                page=common_pb2.PageRequest(page_size=500),
            )
        )
        found += [r.event.event_id for r in page.records if r.event.service != "auditsvc"]
    return found


async def make_destination(policy: policy_pb2_grpc.PolicyServiceStub, name: str) -> str:
    """Three audited policysvc changes: a workspace, its HIPAA eligibility, a destination."""
    workspace = await policy.CreateWorkspace(
        policy_pb2.CreateWorkspaceRequest(name=name), metadata=PERSON_MD
    )
    workspace_id = workspace.workspace.workspace_id
    await policy.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(
            workspace_id=workspace_id, eligible=True, baa_reference="BAA-1"
        ),
        metadata=PERSON_MD,
    )
    destination = await policy.CreateDestination(
        policy_pb2.CreateDestinationRequest(
            workspace_id=workspace_id,
            name="Webhook",
            type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
        ),
        metadata=PERSON_MD,
    )
    return str(destination.destination.destination_id)


async def test_auditsvc_outage_loses_nothing_and_duplicates_nothing(
    start: StartService, database_url: str, tmp_path: Path
) -> None:
    """Policies and keys change while auditsvc is down: the senders turn NOT_SERVING, then
    every record arrives exactly once."""
    port = free_port()
    relay_env = {
        "AUDITSVC_ADDR": f"127.0.0.1:{port}",
        "OUTBOX_MAX_AGE_SECONDS": "0.5",
        "OUTBOX_MAX_BACKOFF_SECONDS": "0.3",
    }
    policysvc = await start("policysvc", **relay_env)
    keysvc = await start("keysvc", POLICYSVC_ADDR=policysvc.peer_address, **relay_env)
    policy = policy_pb2_grpc.PolicyServiceStub(policysvc.channel())
    destinations = [await make_destination(policy, f"Clinic {i}") for i in range(2)]
    keys = keys_pb2_grpc.KeyServiceStub(keysvc.channel())
    for destination_id in destinations:
        await keys.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(destination_id=destination_id), metadata=PERSON_MD
        )

    async def both_not_serving() -> bool:
        statuses = {await health(policysvc.health_address), await health(keysvc.health_address)}
        return statuses == {health_pb2.HealthCheckResponse.NOT_SERVING}

    await eventually(both_not_serving)
    auditsvc = await start(
        "auditsvc", AUDITSVC_PEER_PORT=str(port), AUDITSVC_SIGNING_KEY_FILE=f"{tmp_path}/key.pem"
    )
    audit = stub(auditsvc.channel())
    expected = await outbox_ids(database_url, "policysvc") | await outbox_ids(
        database_url, "keysvc"
    )

    async def all_arrived() -> bool:
        return len(await audited_ids(audit, set(expected.values()))) >= len(expected)

    await eventually(all_arrived)
    assert sorted(await audited_ids(audit, set(expected.values()))) == sorted(expected)
    assert len(expected) >= 8  # 3 policy changes and at least 1 key change per destination


async def test_sigkill_before_the_relay_ran_loses_nothing(
    start: StartService, auditsvc: RunningService, database_url: str
) -> None:
    """A keysvc process killed by SIGKILL right after committing a key generation, before its
    relay ran, delivers that record exactly once after restart."""
    policysvc = await start("policysvc", AUDITSVC_ADDR=auditsvc.peer_address)
    destination_id = await make_destination(
        policy_pb2_grpc.PolicyServiceStub(policysvc.channel()), "Clinic"
    )
    port, health_port = free_port(), free_port()
    secrets = session_secrets()
    env = {
        **os.environ,
        "DATABASE_URL": runtime_url(database_url, "keysvc"),
        "KEYSVC_PORT": str(port),
        "KEYSVC_PEER_PORT": "0",
        "KEYSVC_HEALTH_PORT": str(health_port),
        "PHISEAL_TLS_DIR": str(secrets.folder),
        "POLICYSVC_ADDR": policysvc.peer_address,
        "AUDITSVC_ADDR": auditsvc.peer_address,
        "LOG_FORMAT": "json",
    }

    async def spawn(delay: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.keysvc",
            env={**env, "OUTBOX_START_DELAY_SECONDS": delay},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def up() -> bool:
            try:
                return bool(
                    await health(f"127.0.0.1:{health_port}")
                    == health_pb2.HealthCheckResponse.SERVING
                )
            except grpc.aio.AioRpcError:
                return False

        await eventually(up, timeout=30)
        return process

    first = await spawn("3600")
    credentials = grpc.ssl_channel_credentials(secrets.ca_pem)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        await keys_pb2_grpc.KeyServiceStub(channel).GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(destination_id=destination_id), metadata=PERSON_MD
        )
    first.send_signal(signal.SIGKILL)
    await first.wait()
    key_events = await outbox_ids(database_url, "keysvc")
    audit = stub(auditsvc.channel())
    before = [i for i in await audited_ids(audit, set(key_events.values())) if i in key_events]
    second = await spawn("0")
    try:

        async def delivered() -> bool:
            return set(await audited_ids(audit, set(key_events.values()))) >= set(key_events)

        await eventually(delivered)
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    after = [i for i in await audited_ids(audit, set(key_events.values())) if i in key_events]
    assert (before, sorted(after), len(key_events)) == ([], sorted(key_events), 1)
