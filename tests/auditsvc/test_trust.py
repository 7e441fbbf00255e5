"""Issue 13: a database owner cannot make auditsvc vouch for a log it did not write.

Each test names the issue item it proves; each fails on the code before issue 13.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from phiseal_dev.testing import RunningService
from services.auditsvc import chain, cli
from services.auditsvc.app import AuditServer
from services.auditsvc.audit_log import AuditLog
from services.auditsvc.signing import write_new_key
from services.auditsvc.store import _to_record
from services.common.server.config import ConfigError
from services.common.server.health import ALARMS
from tests.auditsvc.helpers import event, record, tamper
from tests.conftest import StartService

WS = "ws_trust"


def audit_log(service: RunningService) -> AuditLog:
    assert isinstance(service.server, AuditServer)
    return service.server.audit_log


async def _verify(audit: audit_pb2_grpc.AuditServiceStub) -> tuple[str, int]:
    response = await audit.VerifyChain(audit_pb2.VerifyChainRequest(workspace_id=WS))
    if response.ok:
        return ("OK", response.records_checked)
    return (
        audit_pb2.ProblemKind.Name(response.first_problem.kind),
        response.first_problem.sequence,
    )


async def _export_and_verify(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService, tmp_path: Path
) -> tuple[str, str]:
    """Exports, then verifies offline with the genuine public key pinned (and the journal)."""
    path = tmp_path / "export.jsonl"
    chunks = audit.ExportEvents(
        audit_pb2.ExportEventsRequest(filter=audit_pb2.AuditFilter(workspace_id=WS))
    )
    path.write_bytes(b"".join([c.chunk async for c in chunks]))
    key = Path(f"{auditsvc.settings.signing_key_file}.pub")
    verdict, _ = cli.verify_file(path, key, journal_file=auditsvc.settings.journal_file)
    if verdict.problem is None:
        return ("OK", "")
    return (verdict.problem.kind.value, verdict.problem.reason)


async def _alarm_status(auditsvc: RunningService) -> tuple[int, int]:
    """(overall, phiseal.alarms) health status after a fresh check."""
    await auditsvc.server.monitor.check_once()
    async with grpc.aio.insecure_channel(auditsvc.health_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        alarms = await health.Check(health_pb2.HealthCheckRequest(service=ALARMS))
    return overall.status, alarms.status


async def test_quiet_tail_deletion_is_reported_and_never_signed(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService, database_url: str
) -> None:
    """Item 1: the newest records deleted after the last checkpoint, with nothing new
    arriving, fail VerifyChain; the checkpointer refuses to sign and raises the alarm."""
    await record(audit, [event(WS, n=i) for i in range(5)])
    assert await audit_log(auditsvc).checkpoint() == 1
    await record(audit, [event(WS, n=i) for i in range(5, 7)])
    await tamper(
        database_url, "DELETE FROM records WHERE workspace_id = 'ws_trust' AND sequence > 5"
    )
    assert await _verify(audit) == ("PROBLEM_KIND_REMOVED", 6)
    assert await audit_log(auditsvc).checkpoint() == 0
    assert await _alarm_status(auditsvc) == (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )


async def test_quiet_tail_deletion_with_a_rewound_head_is_reported(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService, database_url: str
) -> None:
    """Item 1: rewinding the chain head too does not hide the deleted tail from the service
    that appended it."""
    await record(audit, [event(WS, n=i) for i in range(5)])
    await audit_log(auditsvc).checkpoint()
    await record(audit, [event(WS, n=i) for i in range(5, 7)])
    await tamper(
        database_url,
        "DELETE FROM records WHERE workspace_id = 'ws_trust' AND sequence > 5",
        "UPDATE chain_heads SET sequence = 5, head_hash = (SELECT hash FROM records "
        "WHERE workspace_id = 'ws_trust' AND sequence = 5) WHERE workspace_id = 'ws_trust'",
    )
    assert await _verify(audit) == ("PROBLEM_KIND_REMOVED", 6)
    assert await audit_log(auditsvc).checkpoint() == 0


async def test_idle_workspaces_get_a_checkpoint_every_round(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService
) -> None:
    """Every round signs each workspace again, chained to the one before, and journals it."""
    await record(audit, [event(WS, n=i) for i in range(3)])
    for _ in range(3):
        assert await audit_log(auditsvc).checkpoint() == 1
    journaled = audit_log(auditsvc).checkpoints.journal_checkpoints
    cps = await journaled(WS)
    assert [(c.number, c.sequence) for c in cps] == [(1, 3), (2, 3), (3, 3)]
    assert [c.prev_checkpoint_hash for c in cps[1:]] == [c.hash for c in cps[:-1]]
    response = await audit.VerifyChain(audit_pb2.VerifyChainRequest(workspace_id=WS))
    assert (response.ok, response.checkpoints_checked, response.latest_checkpoint.number) == (
        True,
        3,
        3,
    )


async def _insert_checkpoint(con: asyncpg.Connection, cp: chain.Checkpoint) -> None:
    """As an attacker would: whatever columns the checkpoints table has."""
    columns = [
        r["column_name"]
        for r in await con.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'auditsvc' AND table_name = 'checkpoints'"
        )
    ]
    values: dict[str, Any] = {**cp.to_json(), "signed_at": chain.parse_time(cp.signed_at)}
    names = [c for c in columns if c in values]
    marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    await con.execute(
        f"INSERT INTO checkpoints ({', '.join(names)}) VALUES ({marks})",  # noqa: S608
        *[values[n] for n in names],
    )


async def _rewrite_history(database_url: str, forger: Ed25519PrivateKey | None) -> None:
    """Superuser: rewrites record 2's actor, re-hashes the chain after it, deletes every
    checkpoint and (with ``forger``) registers that key and re-signs the head with it."""
    con = await asyncpg.connect(database_url, server_settings={"search_path": "auditsvc"})
    try:
        async with con.transaction():
            await con.execute("SET LOCAL session_replication_role = replica")
            rows = await con.fetch(
                "SELECT sequence, recorded_at FROM records WHERE workspace_id = $1 "
                "ORDER BY sequence",
                WS,
            )
            full = await con.fetch(
                "SELECT workspace_id, sequence, event_id, actor_user_id, event_type, "
                "end_user_id, event_time, outcome, target, request_id, service, access_reason, "
                "details::text AS details, prev_hash, hash, recorded_at FROM records "
                "WHERE workspace_id = $1 ORDER BY sequence",
                WS,
            )
            prev = chain.GENESIS_HASH
            head = ""
            for row, meta in zip(full, rows, strict=True):
                rec = _to_record(row)
                fields = dict(rec.fields)
                if rec.sequence == 2:
                    fields["actor_user_id"] = "mallory"
                sealed = chain.seal(prev, fields)
                await con.execute(
                    "UPDATE records SET actor_user_id = $1, prev_hash = $2, hash = $3 "
                    "WHERE workspace_id = $4 AND sequence = $5 AND recorded_at = $6",
                    fields["actor_user_id"],
                    sealed.prev_hash,
                    sealed.hash,
                    WS,
                    rec.sequence,
                    meta["recorded_at"],
                )
                prev = head = sealed.hash
            await con.execute(
                "UPDATE chain_heads SET head_hash = $1 WHERE workspace_id = $2", head, WS
            )
            await con.execute("DELETE FROM checkpoints WHERE workspace_id = $1", WS)
            if forger is not None:
                await con.execute(
                    "INSERT INTO signing_keys (key_id, public_key_pem) VALUES ($1, $2)",
                    chain.key_id(forger.public_key()),
                    chain.public_key_pem(forger.public_key()),
                )
                forged = chain.sign_checkpoint(forger, WS, len(full), head, datetime.now(UTC))
                await _insert_checkpoint(con, forged)
    finally:
        await con.close()


async def test_a_key_inserted_into_the_database_is_not_trusted(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService, database_url: str
) -> None:
    """Item 2: history rewritten and re-signed with a key added to signing_keys fails
    VerifyChain: verification keys come from configuration only."""
    await record(audit, [event(WS, n=i) for i in range(4)])
    await audit_log(auditsvc).checkpoint()
    await _rewrite_history(database_url, Ed25519PrivateKey.generate())
    kind, _ = await _verify(audit)
    assert kind in {"PROBLEM_KIND_CHECKPOINT_MISMATCH", "PROBLEM_KIND_CHECKPOINT_MISSING"}


async def test_export_does_not_sign_a_rewritten_history(
    audit: audit_pb2_grpc.AuditServiceStub,
    auditsvc: RunningService,
    database_url: str,
    tmp_path: Path,
) -> None:
    """Item 2: after records and checkpoints are rewritten, ExportEvents does not sign the
    forgery with the genuine key: the offline verifier with that key pinned says FAILED."""
    await record(audit, [event(WS, n=i) for i in range(4)])
    await audit_log(auditsvc).checkpoint()
    await _rewrite_history(database_url, None)
    kind, _ = await _export_and_verify(audit, auditsvc, tmp_path)
    assert kind != "OK"


async def test_missing_signing_key_file_is_a_configuration_error(
    start: StartService, tmp_path: Path
) -> None:
    """Item 4: outside development a missing key file stops start-up instead of silently
    making a new trusted key."""
    missing = tmp_path / "absent.pem"
    with pytest.raises(ConfigError, match="AUDITSVC_SIGNING_KEY_FILE"):
        await start(
            "auditsvc",
            AUDITSVC_SIGNING_KEY_FILE=str(missing),
            AUDITSVC_SIGNING_KEY_GENERATE="false",
        )
    assert not missing.exists()


async def test_a_signing_key_the_configuration_does_not_trust_is_refused(
    start: StartService, tmp_path: Path
) -> None:
    """A key file swapped for another key does not start: the trusted keys do not list it."""
    trusted = tmp_path / "trusted.json"
    await start(
        "auditsvc",
        AUDITSVC_SIGNING_KEY_FILE=str(tmp_path / "first.pem"),
        AUDITSVC_TRUSTED_KEYS_FILE=str(trusted),
    )
    write_new_key(tmp_path / "second.pem")
    with pytest.raises(ConfigError, match="not in AUDITSVC_TRUSTED_KEYS_FILE"):
        await start(
            "auditsvc",
            AUDITSVC_SIGNING_KEY_FILE=str(tmp_path / "second.pem"),
            AUDITSVC_TRUSTED_KEYS_FILE=str(trusted),
            AUDITSVC_SIGNING_KEY_GENERATE="false",
        )


async def test_the_offline_verifier_checks_the_export_against_the_journal(
    audit: audit_pb2_grpc.AuditServiceStub, auditsvc: RunningService, tmp_path: Path
) -> None:
    """An export whose newest records and checkpoints were cut off verifies on its own, but not
    against the journal, which holds every checkpoint signed before the export."""
    await record(audit, [event(WS, n=i) for i in range(3)])
    await audit_log(auditsvc).checkpoint()
    await record(audit, [event(WS, n=3)])
    await audit_log(auditsvc).checkpoint()
    path = tmp_path / "export.jsonl"
    chunks = audit.ExportEvents(
        audit_pb2.ExportEventsRequest(filter=audit_pb2.AuditFilter(workspace_id=WS))
    )
    lines = b"".join([c.chunk async for c in chunks]).decode().splitlines(keepends=True)
    # Cut records 4 and 5 (the export's own) and the checkpoints that cover them.
    cut = [line for line in lines if '"sequence":4' not in line and '"sequence":5' not in line]
    path.write_text("".join(cut))
    trusted = auditsvc.settings.trusted_keys_file
    alone, _ = cli.verify_file(path, None, trusted_keys=trusted)
    journaled, _ = cli.verify_file(
        path, None, trusted_keys=trusted, journal_file=auditsvc.settings.journal_file
    )
    assert alone.problem is None
    assert journaled.problem is not None
    assert journaled.problem.kind == chain.Problem.CHECKPOINT_MISSING
