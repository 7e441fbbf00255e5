"""``phiseal-audit``: verify the audit log live or offline from an export, and export it.

    phiseal-audit verify --file export.jsonl [--public-key auditsvc-signing-key.pem.pub]
    phiseal-audit verify --address localhost:50054 --workspace ws_1 [--from N] [--to N]
    phiseal-audit export --address localhost:50054 --workspace ws_1 --out export.jsonl

Exit status: 0 the chain verifies, 1 it does not (the first bad record is printed), 2 usage or
input errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from services.auditsvc import chain
from services.common.server.config import Env


class InputError(Exception):
    """The export file or key cannot be read; the message says where."""


def read_export(
    path: Path, pinned: Ed25519PublicKey | None
) -> tuple[list[chain.ChainRecord], list[chain.Checkpoint], dict[str, Ed25519PublicKey], bool]:
    """Records in file order, checkpoints, the keys to trust, and whether it is a whole chain."""
    records: list[chain.ChainRecord] = []
    checkpoints: list[chain.Checkpoint] = []
    embedded: dict[str, Ed25519PublicKey] = {}
    complete = False
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item: dict[str, Any] = json.loads(line)
                kind = item.pop("type")
                if kind == "header":
                    complete = bool(item.get("complete_chain"))
                elif kind == "public_key":
                    key = chain.load_public_key_pem(item["pem"])
                    embedded[chain.key_id(key)] = key
                elif kind == "record":
                    records.append(chain.ChainRecord.from_json(item))
                elif kind == "checkpoint":
                    checkpoints.append(chain.Checkpoint.from_json(item))
                else:
                    raise ValueError(f"unknown line type {kind!r}")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise InputError(f"{path}:{number}: {exc}") from None
    keys = {chain.key_id(pinned): pinned} if pinned is not None else embedded
    return records, checkpoints, keys, complete


def verify_file(path: Path, public_key: Path | None) -> tuple[chain.Verdict, list[str]]:
    """The verdict on an export file, and notes for the reader."""
    notes: list[str] = []
    pinned = None
    if public_key is not None:
        try:
            pinned = chain.load_public_key_pem(public_key.read_bytes())
        except (OSError, ValueError) as exc:
            raise InputError(f"{public_key}: {exc}") from None
    else:
        notes.append(
            "checkpoints checked against the public key inside the file; pass --public-key "
            "with the key obtained from the operator to rule out a re-signed export"
        )
    try:
        records, checkpoints, keys, complete = read_export(path, pinned)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    if not complete:
        notes.append(
            "filtered export: each record's own hash and the checkpoints are checked, "
            "not the links between records"
        )
    verdict = chain.verify(
        records,
        checkpoints,
        keys,
        anchor=chain.Anchor() if complete else None,
        to_head=complete,
        linked=complete,
    )
    return verdict, notes


def _report(verdict: chain.Verdict, notes: Sequence[str]) -> int:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if verdict.problem is None:
        print(
            f"OK: {verdict.records_checked} records, "
            f"{verdict.checkpoints_checked} checkpoints verified"
        )
        return 0
    p = verdict.problem
    event = f" (event {p.event_id})" if p.event_id else ""
    print(f"FAILED: {p.kind.value} at sequence {p.sequence}{event}: {p.reason}")
    return 1


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    """TLS to the service port trusting --cacert; plaintext only with --plaintext."""
    if args.plaintext:
        return grpc.aio.insecure_channel(args.address)
    try:
        ca = args.cacert.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"CA certificate {args.cacert} is missing: pass --cacert (make run writes "
            "<PHISEAL_RUN_DIR>/dev-secrets/ca.pem), or --plaintext for a PHISEAL_INSECURE stack"
        ) from None
    return grpc.aio.secure_channel(args.address, grpc.ssl_channel_credentials(ca))


def _metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The bearer token (its subject is the actor recorded); --actor names you when insecure."""
    token = args.token
    if token is None and args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except FileNotFoundError:
            raise InputError(f"token file {args.token_file} is missing") from None
    if token:
        return (("authorization", f"Bearer {token}"),)
    return (("x-actor-id", args.actor),)


async def verify_live(args: argparse.Namespace) -> int:
    async with _channel(args) as channel:
        response = await audit_pb2_grpc.AuditServiceStub(channel).VerifyChain(
            audit_pb2.VerifyChainRequest(
                workspace_id=args.workspace, from_sequence=args.from_seq, to_sequence=args.to_seq
            ),
            metadata=_metadata(args),
            timeout=args.timeout,
        )
    if response.ok:
        print(
            f"OK: {response.records_checked} records, "
            f"{response.checkpoints_checked} checkpoints verified"
        )
        return 0
    p = response.first_problem
    kind = audit_pb2.ProblemKind.Name(p.kind).removeprefix("PROBLEM_KIND_")
    event = f" (event {p.event_id})" if p.event_id else ""
    print(f"FAILED: {kind} at sequence {p.sequence}{event}: {p.reason}")
    return 1


async def export(args: argparse.Namespace) -> int:
    fmt = audit_pb2.EXPORT_FORMAT_CSV if args.format == "csv" else audit_pb2.EXPORT_FORMAT_JSONL
    async with _channel(args) as channel:
        call = audit_pb2_grpc.AuditServiceStub(channel).ExportEvents(
            audit_pb2.ExportEventsRequest(
                filter=audit_pb2.AuditFilter(workspace_id=args.workspace),
                format=fmt,
                access_reason=args.reason,
            ),
            metadata=_metadata(args),
        )
        with args.out.open("wb") as out:
            async for part in call:
                out.write(part.chunk)
    print(f"exported to {args.out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phiseal-audit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="verify a live chain or an export file")
    where = verify.add_mutually_exclusive_group(required=True)
    where.add_argument("--file", type=Path, help="a JSON-lines export (offline)")
    where.add_argument("--address", help="auditsvc host:port (live)")
    verify.add_argument("--public-key", type=Path, help="pinned Ed25519 public key (PEM)")
    verify.add_argument("--workspace", help="workspace to verify (live)")
    verify.add_argument("--from", dest="from_seq", type=int, default=0)
    verify.add_argument("--to", dest="to_seq", type=int, default=0)
    exp = sub.add_parser("export", help="export a workspace's log as JSON lines or CSV")
    exp.add_argument("--address", required=True)
    exp.add_argument("--workspace", required=True)
    exp.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--reason", default="", help="access reason recorded in the audit log")
    for p in (verify, exp):
        p.add_argument(
            "--cacert",
            type=Path,
            default=Env().run_dir() / "dev-secrets" / "ca.pem",
            help="CA that signed auditsvc's certificate",
        )
        p.add_argument("--token", help="bearer token (auditor or admin in the workspace)")
        p.add_argument("--token-file", type=Path, help="file holding the bearer token")
        p.add_argument(
            "--plaintext", action="store_true", help="no TLS (a PHISEAL_INSECURE stack only)"
        )
        p.add_argument("--actor", default="auditor", help="who you are, with --plaintext only")
        p.add_argument("--timeout", type=float, default=300.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "export":
            return asyncio.run(export(args))
        if args.file is not None:
            verdict, notes = verify_file(args.file, args.public_key)
            return _report(verdict, notes)
        if not args.workspace:
            print("phiseal-audit: --workspace is required with --address", file=sys.stderr)
            return 2
        return asyncio.run(verify_live(args))
    except InputError as exc:
        print(f"phiseal-audit: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"phiseal-audit: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
