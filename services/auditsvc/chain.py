"""The hash chain: canonical form, hashes, checkpoint signatures, and the verifier.

Pure: no grpc, no asyncpg. The service (VerifyChain) and the offline CLI (`phiseal-audit
verify --file`) run exactly this code, so they cannot disagree.

Canonical form of a record: the JSON object of the fields in ``RECORD_FIELDS`` (``details`` a
JSON object, ``sequence`` an integer, every other field a string; timestamps UTC as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``), keys sorted, no whitespace, UTF-8, non-ASCII unescaped.
``hash = hex(SHA-256(prev_hash_hex_ascii || canonical_bytes))``; the first record of a
workspace has ``prev_hash`` = 64 zeros. A checkpoint signs the canonical JSON of
``{head_hash, key_id, number, prev_checkpoint_hash, sequence, signed_at, workspace_id}`` with
Ed25519; ``number`` counts a workspace's checkpoints from 1 and ``prev_checkpoint_hash`` is the
hex SHA-256 of the previous checkpoint's signed bytes (64 zeros for the first), so checkpoints
form a chain of their own that cannot lose one quietly.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# Re-exported: the chain's canonical form is the one the shared audit rules define.
from services.common.audit_rules import canonical_json as canonical_json

GENESIS_HASH = "0" * 64

# The fields the hash covers, in the canonical form.
RECORD_FIELDS = (
    "event_id",
    "workspace_id",
    "actor_user_id",
    "event_type",
    "end_user_id",
    "timestamp",
    "outcome",
    "target",
    "request_id",
    "service",
    "access_reason",
    "details",
    "sequence",
    "recorded_at",
)


def format_time(value: datetime) -> str:
    """The one timestamp spelling inside hashes and exports: UTC, microseconds, ``Z``."""
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class ChainRecord:
    """A stored record: the hashed fields plus its links."""

    fields: Mapping[str, Any]  # exactly RECORD_FIELDS, JSON-ready (times already formatted)
    prev_hash: str
    hash: str

    @property
    def sequence(self) -> int:
        return int(self.fields["sequence"])

    @property
    def event_id(self) -> str:
        return str(self.fields["event_id"])

    def to_json(self) -> dict[str, Any]:
        return {**self.fields, "prev_hash": self.prev_hash, "hash": self.hash}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChainRecord:
        missing = [f for f in (*RECORD_FIELDS, "prev_hash", "hash") if f not in data]
        if missing:
            raise ValueError(f"record lacks {', '.join(missing)}")
        return cls(
            fields={f: data[f] for f in RECORD_FIELDS},
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
        )


def record_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical_json(fields))
    return digest.hexdigest()


def seal(prev_hash: str, fields: Mapping[str, Any]) -> ChainRecord:
    """The record that follows ``prev_hash``."""
    return ChainRecord(fields=fields, prev_hash=prev_hash, hash=record_hash(prev_hash, fields))


# --- checkpoints -----------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key_pem(pem: str | bytes) -> Ed25519PublicKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return key


@dataclass(frozen=True)
class TrustedKey:
    """A verification key from configuration, trusted for checkpoints signed in its period."""

    key_id: str
    public_key: Ed25519PublicKey
    valid_from: datetime | None = None  # inclusive; None: since always
    valid_until: datetime | None = None  # exclusive; None: still in use

    def covers(self, at: datetime) -> bool:
        if self.valid_from is not None and at < self.valid_from:
            return False
        return self.valid_until is None or at < self.valid_until


def trust(*public_keys: Ed25519PublicKey) -> dict[str, TrustedKey]:
    """Keys trusted without a validity period (a pinned --public-key)."""
    return {key_id(k): TrustedKey(key_id(k), k) for k in public_keys}


@dataclass(frozen=True)
class Checkpoint:
    workspace_id: str
    sequence: int
    head_hash: str
    signed_at: str  # format_time
    key_id: str
    signature: str  # base64
    number: int = 1
    prev_checkpoint_hash: str = GENESIS_HASH

    def signed_bytes(self) -> bytes:
        return canonical_json(
            {
                "head_hash": self.head_hash,
                "key_id": self.key_id,
                "number": self.number,
                "prev_checkpoint_hash": self.prev_checkpoint_hash,
                "sequence": self.sequence,
                "signed_at": self.signed_at,
                "workspace_id": self.workspace_id,
            }
        )

    @property
    def hash(self) -> str:
        """What the next checkpoint's ``prev_checkpoint_hash`` must be."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "number": self.number,
            "sequence": self.sequence,
            "head_hash": self.head_hash,
            "prev_checkpoint_hash": self.prev_checkpoint_hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            workspace_id=str(data["workspace_id"]),
            sequence=int(data["sequence"]),
            head_hash=str(data["head_hash"]),
            signed_at=str(data["signed_at"]),
            key_id=str(data["key_id"]),
            signature=str(data["signature"]),
            number=int(data["number"]),
            prev_checkpoint_hash=str(data["prev_checkpoint_hash"]),
        )


def sign_checkpoint(
    private_key: Ed25519PrivateKey,
    workspace_id: str,
    sequence: int,
    head_hash: str,
    at: datetime,
    previous: Checkpoint | None = None,
) -> Checkpoint:
    """The checkpoint of ``head_hash`` at ``sequence`` that follows ``previous`` (None: first)."""
    unsigned = Checkpoint(
        workspace_id,
        sequence,
        head_hash,
        format_time(at),
        key_id(private_key.public_key()),
        "",
        number=previous.number + 1 if previous else 1,
        prev_checkpoint_hash=previous.hash if previous else GENESIS_HASH,
    )
    signature = base64.b64encode(private_key.sign(unsigned.signed_bytes())).decode("ascii")
    return replace(unsigned, signature=signature)


def signature_valid(checkpoint: Checkpoint, keys: Mapping[str, TrustedKey]) -> bool:
    """Signed by a trusted key, within that key's validity period."""
    trusted = keys.get(checkpoint.key_id)
    if trusted is None:
        return False
    try:
        if not trusted.covers(parse_time(checkpoint.signed_at)):
            return False
        trusted.public_key.verify(
            base64.b64decode(checkpoint.signature, validate=True), checkpoint.signed_bytes()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# --- verification ----------------------------------------------------------------------------


class Problem(StrEnum):
    EDITED = "EDITED"
    REMOVED = "REMOVED"
    INSERTED = "INSERTED"
    REORDERED = "REORDERED"
    CHECKPOINT_MISMATCH = "CHECKPOINT_MISMATCH"
    CHECKPOINT_MISSING = "CHECKPOINT_MISSING"


@dataclass(frozen=True)
class Finding:
    kind: Problem
    sequence: int
    event_id: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    records_checked: int
    checkpoints_checked: int
    problem: Finding | None
    latest_checkpoint: Checkpoint | None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Anchor:
    """The trusted record just before the verified range (sequence 0 = the genesis)."""

    sequence: int = 0
    hash: str = GENESIS_HASH


def verify(
    records: Sequence[ChainRecord],
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, TrustedKey],
    *,
    anchor: Anchor | None = Anchor(),
    to_head: bool = True,
    linked: bool = True,
) -> Verdict:
    """Walks ``records`` in the given order and reports the first problem.

    ``anchor`` None means the range starts mid-chain with nothing trusted before it (the first
    record's own hash is still checked). With ``to_head``, a checkpoint beyond the last record
    means records were removed from the end. ``linked`` False (a filtered export, which is not
    a contiguous run) checks only each record's own hash and the checkpoints. Checkpoints are
    checked at their sequence, so the problem reported is always the earliest along the chain.
    """
    by_hash = {r.hash: r for r in records}
    present = {r.sequence for r in records}
    cps_at: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        cps_at.setdefault(cp.sequence, []).append(cp)
    checked_cps = 0
    latest: Checkpoint | None = None
    prev = anchor
    seen: set[int] = set()

    def problem(kind: Problem, rec: ChainRecord | None, seq: int, reason: str) -> Verdict:
        return Verdict(
            records_checked=len(seen),
            checkpoints_checked=checked_cps,
            problem=Finding(kind, seq, rec.event_id if rec else "", reason),
            latest_checkpoint=latest,
        )

    for rec in records:
        seq = rec.sequence
        content_ok = record_hash(rec.prev_hash, rec.fields) == rec.hash
        if seq in seen:
            return problem(Problem.INSERTED, rec, seq, f"sequence {seq} appears more than once")
        if prev is not None and linked:
            expected = prev.sequence + 1
            if seq < expected:
                return problem(
                    Problem.REORDERED, rec, seq, f"sequence {seq} comes after {prev.sequence}"
                )
            if seq > expected:
                if expected in present:
                    return problem(
                        Problem.REORDERED,
                        rec,
                        seq,
                        f"sequence {seq} comes before {expected}, which appears later",
                    )
                return problem(
                    Problem.REMOVED,
                    None,
                    expected,
                    f"sequence {expected} is missing (the next record present is {seq})",
                )
            linked = rec.prev_hash == prev.hash
            elsewhere = by_hash.get(rec.prev_hash)
            if not linked and elsewhere is not None and elsewhere.sequence != prev.sequence:
                return problem(
                    Problem.REORDERED,
                    rec,
                    seq,
                    f"record follows sequence {elsewhere.sequence}'s hash, "
                    f"not sequence {prev.sequence}'s: it was moved",
                )
            if not content_ok:
                return problem(Problem.EDITED, rec, seq, "record content does not match its hash")
            if not linked:
                return problem(
                    Problem.INSERTED,
                    rec,
                    seq,
                    f"record does not follow sequence {prev.sequence}'s hash: "
                    "the chain does not account for it",
                )
        elif not content_ok:
            return problem(Problem.EDITED, rec, seq, "record content does not match its hash")
        seen.add(seq)
        for cp in cps_at.get(seq, ()):
            checked_cps += 1
            if not signature_valid(cp, keys):
                return problem(
                    Problem.CHECKPOINT_MISMATCH,
                    rec,
                    seq,
                    f"checkpoint {cp.number} at sequence {seq} has no valid signature by a "
                    f"trusted key in its validity period (key {cp.key_id[:16]})",
                )
            if cp.head_hash != rec.hash or cp.workspace_id != rec.fields["workspace_id"]:
                return problem(
                    Problem.CHECKPOINT_MISMATCH,
                    rec,
                    seq,
                    f"checkpoint signed head {cp.head_hash[:16]}… at sequence {seq}, "
                    f"the log holds {rec.hash[:16]}…",
                )
            latest = cp
        prev = Anchor(seq, rec.hash)
    if to_head and linked:
        last = prev.sequence if prev is not None else 0
        beyond = sorted(cp.sequence for cp in checkpoints if cp.sequence > last)
        if beyond:
            return problem(
                Problem.REMOVED,
                None,
                last + 1,
                f"a checkpoint was signed at sequence {beyond[-1]} but the log ends at {last}",
            )
    return Verdict(len(seen), checked_cps, None, latest)


def check_checkpoint_chain(
    checkpoints: Iterable[Checkpoint], keys: Mapping[str, TrustedKey]
) -> Finding | None:
    """The first break in a run of one workspace's checkpoints: a number skipped, a link that
    does not follow, a head that went backwards, or a signature no trusted key confirms."""
    previous: Checkpoint | None = None
    for cp in sorted(checkpoints, key=lambda c: (c.number, c.key_id)):
        if not signature_valid(cp, keys):
            return Finding(
                Problem.CHECKPOINT_MISMATCH,
                cp.sequence,
                "",
                f"checkpoint {cp.number} has no valid signature by a trusted key in its "
                f"validity period (key {cp.key_id[:16]})",
            )
        if previous is not None:
            if cp.number != previous.number + 1:
                return Finding(
                    Problem.CHECKPOINT_MISSING,
                    cp.sequence,
                    "",
                    f"checkpoint {previous.number + 1} is missing "
                    f"(the next one present is {cp.number})",
                )
            if cp.prev_checkpoint_hash != previous.hash:
                return Finding(
                    Problem.CHECKPOINT_MISMATCH,
                    cp.sequence,
                    "",
                    f"checkpoint {cp.number} does not follow checkpoint {previous.number}",
                )
            if cp.sequence < previous.sequence:
                return Finding(
                    Problem.CHECKPOINT_MISMATCH,
                    cp.sequence,
                    "",
                    f"checkpoint {cp.number} signs sequence {cp.sequence}, before checkpoint "
                    f"{previous.number}'s {previous.sequence}: the chain was rewound",
                )
        previous = cp
    return None


def compare_journal(
    journal: Iterable[Checkpoint], stored: Iterable[Checkpoint], *, up_to_number: int | None
) -> Finding | None:
    """The first journal checkpoint (numbered at most ``up_to_number``; None: all) that the
    stored ones lack or hold differently. The journal lives outside PostgreSQL, so this is what
    catches checkpoints deleted or rewritten together with the records they cover."""
    held = {(cp.workspace_id, cp.number, cp.key_id): cp for cp in stored}
    for cp in sorted(journal, key=lambda c: c.number):
        if up_to_number is not None and cp.number > up_to_number:
            break
        twin = held.get((cp.workspace_id, cp.number, cp.key_id))
        if twin is None:
            return Finding(
                Problem.CHECKPOINT_MISSING,
                cp.sequence,
                "",
                f"journal checkpoint {cp.number} (sequence {cp.sequence}, signed "
                f"{cp.signed_at}) is missing: records or checkpoints were removed",
            )
        if twin != cp:
            return Finding(
                Problem.CHECKPOINT_MISMATCH,
                cp.sequence,
                "",
                f"checkpoint {cp.number} differs from the journal's copy: it was rewritten",
            )
    return None
