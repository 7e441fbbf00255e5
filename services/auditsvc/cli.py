"""``phiseal-audit``: verify the audit log live or offline from an export, and export it.

    phiseal-audit verify --file export.jsonl --trusted-keys trusted.json [--journal j.jsonl]
    phiseal-audit verify --file export.jsonl --public-key auditsvc-signing-key.pem.pub
    phiseal-audit verify --address localhost:50054 --workspace ws_1 [--from N] [--to N]
    phiseal-audit export --address localhost:50054 --workspace ws_1 --out export.jsonl
    phiseal-audit keygen --key signing-key.pem --trusted-keys trusted.json

``--journal`` is auditsvc's checkpoint journal (AUDITSVC_JOURNAL_FILE, or its write-once copy;
repeat it for rotated files): every checkpoint in it up to the export's newest must be in the
export, unchanged.

Exit status: 0 the chain verifies, 1 it does not (the first bad record is printed), 2 usage or
input errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from services.auditsvc import chain, journal, signing
from services.common.server.config import Env


class InputError(Exception):
    """The export file or key cannot be read; the message says where."""


@dataclass(frozen=True)
class ExportFile:
    records: list[chain.ChainRecord]  # in file order
    checkpoints: list[chain.Checkpoint]
    keys: dict[str, chain.TrustedKey]  # the keys given, else those embedded
    workspace_id: str
    complete: bool  # a whole chain, not a filtered one
    unverified: chain.Finding | None  # the alarm auditsvc stated instead of signing
    holds_before: str  # every checkpoint signed before this time must be in the file


def read_export(path: Path, trusted: dict[str, chain.TrustedKey] | None) -> ExportFile:
    """The export file's parts; the keys to trust are ``trusted``, else those embedded."""
    records: list[chain.ChainRecord] = []
    checkpoints: list[chain.Checkpoint] = []
    embedded: dict[str, Ed25519PublicKey] = {}
    complete = False
    workspace = ""
    unverified: chain.Finding | None = None
    holds_before = ""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item: dict[str, Any] = json.loads(line)
                kind = item.pop("type")
                if kind == "header":
                    complete = bool(item.get("complete_chain"))
                    workspace = str(item.get("workspace_id", ""))
                    holds_before = str(item.get("holds_checkpoints_signed_before", ""))
                    if "unverified" in item:
                        alarm = item["unverified"]
                        unverified = chain.Finding(
                            chain.Problem(alarm["kind"]),
                            int(alarm["sequence"]),
                            "",
                            f"auditsvc refused to sign this chain: {alarm['reason']}",
                        )
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
    keys = trusted if trusted is not None else chain.trust(*embedded.values())
    return ExportFile(records, checkpoints, keys, workspace, complete, unverified, holds_before)


def _trusted(public_key: Path | None, trusted_keys: Path | None) -> dict[str, chain.TrustedKey]:
    keys: dict[str, chain.TrustedKey] = {}
    try:
        if trusted_keys is not None:
            keys.update(signing.read_trusted_keys(trusted_keys))
        if public_key is not None:
            keys.update(chain.trust(chain.load_public_key_pem(public_key.read_bytes())))
    except (OSError, ValueError) as exc:
        raise InputError(f"{exc}") from None
    return keys


def verify_file(
    path: Path,
    public_key: Path | None,
    *,
    trusted_keys: Path | None = None,
    journal_file: Path | Sequence[Path] | None = None,
) -> tuple[chain.Verdict, list[str]]:
    """The verdict on an export file (against the journal, when given), and notes."""
    notes: list[str] = []
    trusted = None
    if public_key is not None or trusted_keys is not None:
        trusted = _trusted(public_key, trusted_keys)
    else:
        notes.append(
            "checkpoints checked against the public key inside the file; pass --trusted-keys "
            "(or --public-key) obtained from the operator to rule out a re-signed export"
        )
    journals = [journal_file] if isinstance(journal_file, Path) else list(journal_file or ())
    if not journals:
        notes.append(
            "no --journal: checkpoints removed or rewritten together with the records they "
            "cover are not detectable from the export alone"
        )
    try:
        export = read_export(path, trusted)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    records, checkpoints, keys, complete = (
        export.records,
        export.checkpoints,
        export.keys,
        export.complete,
    )
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
    if verdict.problem is not None:
        return verdict, notes
    finding = chain.check_checkpoint_chain(checkpoints, keys) or export.unverified
    if finding is None and journals:
        journaled: list[chain.Checkpoint] = []
        for path_ in journals:
            if not path_.is_file():
                raise InputError(f"{path_}: no such journal file")
            try:
                journaled += journal.read_checkpoints(path_, export.workspace_id)
            except (OSError, journal.JournalError) as exc:
                raise InputError(f"{path_}: {exc}") from None
        # Checkpoints made after the export are not in it; every earlier one must be: those
        # numbered up to its newest, and those signed before the time its header states.
        newest = max((cp.number for cp in checkpoints), default=0)
        due = [
            cp
            for cp in journaled
            if cp.number <= newest or (export.holds_before and cp.signed_at < export.holds_before)
        ]
        finding = chain.compare_journal(due, checkpoints, up_to_number=None)
    if finding is not None:
        verdict = chain.Verdict(verdict.records_checked, verdict.checkpoints_checked, finding, None)
    return verdict, notes


def keygen(key_file: Path, trusted_keys: Path) -> int:
    """A new signing key, and its entry (valid from now) added to the trusted keys file."""
    if key_file.exists():
        raise InputError(f"{key_file} exists; refusing to overwrite a signing key")
    try:
        keys = signing.read_trusted_keys(trusted_keys) if trusted_keys.exists() else {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{exc}") from None
    key = signing.write_new_key(key_file)
    kid = chain.key_id(key.public_key())
    keys[kid] = chain.TrustedKey(kid, key.public_key(), valid_from=datetime.now(UTC))
    signing.write_trusted_keys(trusted_keys, keys)
    print(f"key {kid} written to {key_file}; trusted from now in {trusted_keys}")
    print("when it replaces an older key, set that key's valid_until to now in the same file")
    return 0


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
    verify.add_argument(
        "--trusted-keys", type=Path, help="trusted keys file (AUDITSVC_TRUSTED_KEYS_FILE)"
    )
    verify.add_argument(
        "--journal",
        type=Path,
        action="append",
        help="auditsvc's checkpoint journal (AUDITSVC_JOURNAL_FILE); repeat for rotated files",
    )
    verify.add_argument("--workspace", help="workspace to verify (live)")
    verify.add_argument("--from", dest="from_seq", type=int, default=0)
    verify.add_argument("--to", dest="to_seq", type=int, default=0)
    exp = sub.add_parser("export", help="export a workspace's log as JSON lines or CSV")
    exp.add_argument("--address", required=True)
    exp.add_argument("--workspace", required=True)
    exp.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--reason", default="", help="access reason recorded in the audit log")
    gen = sub.add_parser("keygen", help="make a signing key and trust it from now")
    gen.add_argument("--key", type=Path, required=True, help="where to write the private key")
    gen.add_argument("--trusted-keys", type=Path, required=True, help="trusted keys file")
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
        if args.command == "keygen":
            return keygen(args.key, args.trusted_keys)
        if args.file is not None:
            verdict, notes = verify_file(
                args.file,
                args.public_key,
                trusted_keys=args.trusted_keys,
                journal_file=args.journal,
            )
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
