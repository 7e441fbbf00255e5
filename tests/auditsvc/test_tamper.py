"""The tamper suite, run as each attacker with database access: the runtime role auditsvc
connects as (every change refused outright) and a superuser who switches the triggers off
(every change caught, live and offline)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from phiseal_dev.dbroles import runtime_url
from phiseal_dev.testing import RunningService
from services.auditsvc import cli
from services.auditsvc.app import AuditServer
from services.auditsvc.audit_log import AuditLog
from tests.auditsvc.helpers import event, record, tamper

WS = "ws_t"
ATTACKERS = ("runtime_role", "superuser")


async def attempt(who: str, database_url: str, *statements: str) -> bool:
    """Tampers as ``who``; True when it went through. The runtime role first tries to switch
    the append-only triggers off, as the table owner could."""
    if who == "superuser":
        await tamper(database_url, *statements)
        return True
    con = await asyncpg.connect(
        runtime_url(database_url, "auditsvc"), server_settings={"search_path": "auditsvc"}
    )
    try:
        for sql in ("ALTER TABLE records DISABLE TRIGGER USER", *statements):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await con.execute(sql)
    finally:
        await con.close()
    return False


async def _verdict_ok(audit: audit_pb2_grpc.AuditServiceStub) -> bool:
    return bool((await _verify(audit)).ok)


def audit_log(service: RunningService) -> AuditLog:
    assert isinstance(service.server, AuditServer)
    return service.server.audit_log


async def _five(audit: audit_pb2_grpc.AuditServiceStub) -> list[str]:
    events = [event(WS, n=i) for i in range(5)]
    await record(audit, events)
    return [e.event_id for e in events]


async def _verify(audit: audit_pb2_grpc.AuditServiceStub) -> audit_pb2.VerifyChainResponse:
    response: audit_pb2.VerifyChainResponse = await audit.VerifyChain(
        audit_pb2.VerifyChainRequest(workspace_id=WS)
    )
    return response


async def _verify_offline(
    audit: audit_pb2_grpc.AuditServiceStub, tmp_path: Path, auditsvc: RunningService
) -> tuple[str, int, str]:
    """Exports, verifies the file against the pinned public key: (kind, sequence, event_id)."""
    path = tmp_path / "export.jsonl"
    chunks = audit.ExportEvents(
        audit_pb2.ExportEventsRequest(filter=audit_pb2.AuditFilter(workspace_id=WS))
    )
    path.write_bytes(b"".join([c.chunk async for c in chunks]))
    key = Path(str(auditsvc.settings.signing_key_file) + ".pub")
    verdict, _ = cli.verify_file(path, key)
    if verdict.problem is None:
        return ("OK", verdict.records_checked, "")
    p = verdict.problem
    return (p.kind.value, p.sequence, p.event_id)


def _problem(response: audit_pb2.VerifyChainResponse) -> tuple[str, int, str]:
    p = response.first_problem
    return (audit_pb2.ProblemKind.Name(p.kind), p.sequence, p.event_id)


async def test_untouched_log_verifies(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService, tmp_path: Path
) -> None:
    """An untouched log verifies live and offline (with its checkpoint)."""
    await _five(audit)
    await audit_log(auditsvc).checkpoint()
    response = await _verify(audit)
    assert (response.ok, response.records_checked, response.checkpoints_checked) == (True, 5, 1)
    assert response.latest_checkpoint.sequence == 5
    # The export appends its own 'Audit Log Exported' record: six records.
    assert await _verify_offline(audit, tmp_path, auditsvc) == ("OK", 6, "")


@pytest.mark.parametrize("who", ATTACKERS)
async def test_edited_record_is_named(
    audit: audit_pb2_grpc.AuditServiceStub,
    auditsvc: RunningService,
    database_url: str,
    tmp_path: Path,
    who: str,
) -> None:
    """An edited record is refused to the runtime role, and reported as EDITED, live and
    offline, when a superuser does it."""
    ids = await _five(audit)
    if not await attempt(
        who,
        database_url,
        "UPDATE records SET actor_user_id = 'mallory' WHERE workspace_id = 'ws_t' AND sequence = 3",
    ):
        assert await _verdict_ok(audit)
        return
    assert _problem(await _verify(audit)) == ("PROBLEM_KIND_EDITED", 3, ids[2])
    assert await _verify_offline(audit, tmp_path, auditsvc) == ("EDITED", 3, ids[2])


@pytest.mark.parametrize("who", ATTACKERS)
async def test_deleted_record_is_named(
    audit: audit_pb2_grpc.AuditServiceStub,
    auditsvc: RunningService,
    database_url: str,
    tmp_path: Path,
    who: str,
) -> None:
    """A deleted record is refused to the runtime role, and reported as REMOVED at its
    sequence, live and offline, when a superuser does it."""
    await _five(audit)
    if not await attempt(
        who, database_url, "DELETE FROM records WHERE workspace_id = 'ws_t' AND sequence = 2"
    ):
        assert await _verdict_ok(audit)
        return
    assert _problem(await _verify(audit)) == ("PROBLEM_KIND_REMOVED", 2, "")
    assert await _verify_offline(audit, tmp_path, auditsvc) == ("REMOVED", 2, "")


@pytest.mark.parametrize("who", ATTACKERS)
async def test_swapped_records_are_named(
    audit: audit_pb2_grpc.AuditServiceStub,
    auditsvc: RunningService,
    database_url: str,
    tmp_path: Path,
    who: str,
) -> None:
    """Two records swapping places is refused to the runtime role, and reported as REORDERED
    at the first, live and offline, when a superuser does it."""
    ids = await _five(audit)
    if not await attempt(
        who,
        database_url,
        "UPDATE records SET sequence = 1000 WHERE workspace_id = 'ws_t' AND sequence = 3",
        "UPDATE records SET sequence = 3 WHERE workspace_id = 'ws_t' AND sequence = 4",
        "UPDATE records SET sequence = 4 WHERE workspace_id = 'ws_t' AND sequence = 1000",
    ):
        assert await _verdict_ok(audit)
        return
    assert _problem(await _verify(audit)) == ("PROBLEM_KIND_REORDERED", 3, ids[3])
    assert await _verify_offline(audit, tmp_path, auditsvc) == ("REORDERED", 3, ids[3])


@pytest.mark.parametrize("who", ATTACKERS)
async def test_truncated_tail_is_caught_by_the_checkpoint(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService, database_url: str, who: str
) -> None:
    """Deleting the newest records is refused to the runtime role, and caught when a superuser
    does it: a checkpoint covers a sequence no longer there."""
    await _five(audit)
    await audit_log(auditsvc).checkpoint()
    if not await attempt(
        who, database_url, "DELETE FROM records WHERE workspace_id = 'ws_t' AND sequence >= 4"
    ):
        assert await _verdict_ok(audit)
        return
    assert _problem(await _verify(audit))[:2] == ("PROBLEM_KIND_REMOVED", 4)


async def test_verify_a_range(audit: audit_pb2_grpc.AuditServiceStub, database_url: str) -> None:
    """A range after an edit verifies; a range containing it does not."""
    await _five(audit)
    await tamper(
        database_url,
        "UPDATE records SET target = 'x' WHERE workspace_id = 'ws_t' AND sequence = 2",
    )
    after = await audit.VerifyChain(
        audit_pb2.VerifyChainRequest(workspace_id=WS, from_sequence=3, to_sequence=5)
    )
    containing = await audit.VerifyChain(
        audit_pb2.VerifyChainRequest(workspace_id=WS, from_sequence=2, to_sequence=4)
    )
    assert (after.ok, after.records_checked) == (True, 3)
    assert _problem(containing)[:2] == ("PROBLEM_KIND_EDITED", 2)


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE records DISABLE TRIGGER records_append_only",
        "ALTER TABLE checkpoints DISABLE TRIGGER USER",
        "SET session_replication_role = replica",
        "UPDATE records SET actor_user_id = 'mallory'",
        "DELETE FROM records",
        "TRUNCATE records",
        "DELETE FROM event_ids",
        "DELETE FROM checkpoints",
        "UPDATE checkpoints SET signature = ''",
        "INSERT INTO signing_keys (key_id, public_key_pem) VALUES ('k', 'pem')",
        "DROP TABLE checkpoints",
        "CREATE TABLE records_shadow (x int)",
    ],
)
async def test_the_service_role_cannot_change_the_log(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService, sql: str
) -> None:
    """Issue 13 item 3: connected exactly as auditsvc is (its DATABASE_URL), disabling the
    triggers, UPDATE, DELETE, TRUNCATE, DDL and inserting a signing key are all refused."""
    await _five(audit)
    con = await asyncpg.connect(
        auditsvc.settings.server.database_url, server_settings={"search_path": "auditsvc"}
    )
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await con.execute(sql)
    finally:
        await con.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE records SET actor_user_id = 'mallory'",
        "DELETE FROM records",
        "TRUNCATE records",
        "TRUNCATE records_default",
    ],
)
async def test_triggers_refuse_even_a_superuser(
    audit: audit_pb2_grpc.AuditServiceStub, database_url: str, sql: str
) -> None:
    """With the triggers on, even the table owner cannot change the log."""
    await _five(audit)
    con = await asyncpg.connect(database_url, server_settings={"search_path": "auditsvc"})
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await con.execute(sql)
    finally:
        await con.close()


async def test_partitions_cover_this_month_and_ahead(database_url: str) -> None:
    """Monthly partitions exist for now and the next two months, each refusing TRUNCATE."""
    con = await asyncpg.connect(database_url, server_settings={"search_path": "auditsvc"})
    try:
        await con.fetchval("SELECT ensure_record_partitions(2)")
        names = await con.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'records'::regclass AND c.relname <> 'records_default'"
        )
        month = await con.fetchval(
            "SELECT 'records_' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await con.execute(f'TRUNCATE "{month}"')
    finally:
        await con.close()
    assert len(names) >= 3
    assert month in {r["relname"] for r in names}
