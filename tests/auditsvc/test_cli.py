"""`phiseal-audit verify` as an operator runs it: exit status and the line it prints."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from phiseal.audit.v1 import audit_pb2_grpc

from phiseal_dev.testing import RunningService, session_secrets
from tests.auditsvc.helpers import event, record, tamper


def _secured(address: str) -> list[str]:
    """--address plus the TLS and token options an operator passes."""
    secrets = session_secrets()
    return [
        "--address",
        address,
        "--cacert",
        str(secrets.folder / "ca.pem"),
        "--token",
        secrets.admin_token("auditor@example.com"),
    ]


async def _cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.auditsvc.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode().strip()


async def test_live_verify_and_export_then_offline_verify(
    audit: audit_pb2_grpc.AuditServiceStub,
    auditsvc: RunningService,
    database_url: str,
    tmp_path: Path,
) -> None:
    """verify --address says OK; after an edit, the export verified offline names it (exit 1)."""
    await record(audit, [event("ws_cli", n=i) for i in range(3)])
    live = await _cli("verify", *_secured(auditsvc.address), "--workspace", "ws_cli")
    await tamper(
        database_url,
        "UPDATE records SET end_user_id = 'x' WHERE workspace_id = 'ws_cli' AND sequence = 2",
    )
    out = tmp_path / "export.jsonl"
    exported = await _cli(
        "export", *_secured(auditsvc.address), "--workspace", "ws_cli", "--out", str(out)
    )
    offline = await _cli(
        "verify",
        "--file",
        str(out),
        "--public-key",
        f"{auditsvc.settings.signing_key_file}.pub",
    )
    assert live == (0, "OK: 3 records, 0 checkpoints verified")
    assert exported[0] == 0
    assert offline[0] == 1
    assert offline[1].startswith("FAILED: EDITED at sequence 2 (event ")


async def test_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    """A file that is not an export exits 2 without a verdict."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert await _cli("verify", "--file", str(bad)) == (2, "")
