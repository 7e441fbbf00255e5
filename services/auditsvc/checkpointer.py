"""Signing checkpoints only over what verified, and raising the alarm when it does not.

Before it signs a workspace's next checkpoint, the checkpointer checks the records from its
last checkpoint up to the head, and that head against what this process remembers: the newest
record it appended and the newest checkpoint it signed (loaded from the journal at start-up).
A gap — a deleted tail, a rewound head, a checkpoint gone from the database, a record changed
— is an alarm: a log event, a metric, a health detail and a journal line; that workspace is
not signed again until the gap is gone. Every interval each workspace gets a checkpoint even
when nothing new arrived, so the journal shows up to when the log was intact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import Counter, Gauge

from services.auditsvc import chain

log = structlog.get_logger("auditsvc.checkpoints")

ALARMS = Counter(
    "phiseal_audit_chain_alarms_total",
    "Audit chains found broken before signing (a gap is never signed over)",
    ["kind"],
)
IN_ALARM = Gauge(
    "phiseal_audit_chain_workspaces_in_alarm",
    "Workspaces whose audit chain is not being signed because it did not verify",
)
SIGNED = Counter("phiseal_audit_checkpoints_signed_total", "Checkpoints signed and journaled")


@dataclass(frozen=True)
class ChainState:
    """One workspace's chain as a signing round sees it (one consistent snapshot)."""

    workspace_id: str
    head: tuple[int, str] | None  # the chain_heads row; None when it is missing
    last_checkpoint: chain.Checkpoint | None
    records: Sequence[chain.ChainRecord]  # from the last checkpoint's sequence (or 1) on


class SigningRound(Protocol):
    @property
    def states(self) -> Sequence[ChainState]: ...

    async def insert(self, checkpoints: Sequence[chain.Checkpoint]) -> None: ...


class RoundSource(Protocol):
    def signing_round(
        self, workspace_id: str | None, known: Sequence[str]
    ) -> AbstractAsyncContextManager[SigningRound, bool | None]: ...


class CheckpointJournal(Protocol):
    """The append-only journal outside PostgreSQL (services.auditsvc.journal.Journal)."""

    def append(self, entries: Sequence[Mapping[str, Any]]) -> None: ...

    def checkpoints(self, workspace_id: str | None = None) -> list[chain.Checkpoint]: ...

    def latest(self) -> dict[str, chain.Checkpoint]: ...


class Checkpointer:
    """Signs verified heads; one per process, shared by the periodic job, exports and verify."""

    def __init__(
        self,
        store: RoundSource,
        signing_key: Ed25519PrivateKey,
        trusted: Mapping[str, chain.TrustedKey],
        journal: CheckpointJournal,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._key = signing_key
        self.trusted = trusted
        self._journal = journal
        self._clock = clock
        self._appended: dict[str, tuple[int, str]] = {}
        self._signed: dict[str, chain.Checkpoint] = {}
        self.alarms: dict[str, chain.Finding] = {}
        # A round's journal write and commit, and a verifier's reads, never interleave.
        self.lock = asyncio.Lock()

    async def load_journal(self) -> None:
        """Remembers the newest checkpoint this journal holds per workspace (at start-up)."""
        self._signed = await asyncio.to_thread(self._journal.latest)
        log.info("checkpoint_journal_loaded", workspaces=len(self._signed))

    def appended(self, heads: Mapping[str, tuple[int, str]]) -> None:
        """Called after each committed append: the newest record per workspace."""
        for ws, head in heads.items():
            if ws not in self._appended or head[0] > self._appended[ws][0]:
                self._appended[ws] = head

    def remembered_head(self, workspace_id: str) -> tuple[int, str] | None:
        return self._appended.get(workspace_id)

    async def journal_checkpoints(self, workspace_id: str) -> list[chain.Checkpoint]:
        return await asyncio.to_thread(self._journal.checkpoints, workspace_id)

    async def run(self, workspace_id: str | None = None) -> int:
        """One round: every workspace (or one) verified and signed, or alarmed. Returns how
        many checkpoints were signed."""
        async with self.lock:
            # Copied before the snapshot starts: everything remembered here is committed, so
            # the snapshot sees it (an append finishing later is simply not remembered yet).
            appended = dict(self._appended)
            signed = dict(self._signed)
            known = sorted(set(appended) | set(signed))
            made: list[chain.Checkpoint] = []
            findings: dict[str, chain.Finding | None] = {}
            async with self._store.signing_round(workspace_id, known) as rnd:
                for state in rnd.states:
                    ws = state.workspace_id
                    finding = self._check(state, appended.get(ws), signed.get(ws))
                    findings[ws] = finding
                    if finding is not None or state.head is None or state.head[0] == 0:
                        continue
                    made.append(
                        chain.sign_checkpoint(
                            self._key,
                            ws,
                            state.head[0],
                            state.head[1],
                            self._clock(),
                            state.last_checkpoint,
                        )
                    )
                await rnd.insert(made)
                # On disk before the commit: a checkpoint in the database is always journaled.
                await asyncio.to_thread(
                    self._journal.append, [{"type": "checkpoint", **cp.to_json()} for cp in made]
                )
            for cp in made:
                self._signed[cp.workspace_id] = cp
            await self._settle(findings)
        SIGNED.inc(len(made))
        return len(made)

    def _check(
        self,
        state: ChainState,
        appended: tuple[int, str] | None,
        signed: chain.Checkpoint | None,
    ) -> chain.Finding | None:
        """Why this chain must not be signed now, or None."""
        last = state.last_checkpoint
        if signed is not None and (last is None or last.number < signed.number):
            return chain.Finding(
                chain.Problem.CHECKPOINT_MISSING,
                signed.sequence,
                "",
                f"checkpoint {signed.number} (sequence {signed.sequence}), which this service "
                "signed and journaled, is missing from the database",
            )
        if (
            signed is not None
            and last is not None
            and last.number == signed.number != 0
            and last != signed
        ):
            return chain.Finding(
                chain.Problem.CHECKPOINT_MISMATCH,
                last.sequence,
                "",
                f"checkpoint {last.number} differs from the one this service signed",
            )
        records = list(state.records)
        anchor = chain.Anchor()
        if last is not None:
            if not chain.signature_valid(last, self.trusted):
                return chain.Finding(
                    chain.Problem.CHECKPOINT_MISMATCH,
                    last.sequence,
                    "",
                    f"the latest checkpoint ({last.number}) has no valid signature by a "
                    "trusted key",
                )
            first = records[0] if records else None
            if first is None or first.sequence != last.sequence:
                return chain.Finding(
                    chain.Problem.REMOVED,
                    last.sequence,
                    "",
                    f"the record checkpoint {last.number} signed (sequence {last.sequence}) "
                    "is missing",
                )
            if (
                first.hash != last.head_hash
                or chain.record_hash(first.prev_hash, first.fields) != first.hash
            ):
                return chain.Finding(
                    chain.Problem.EDITED,
                    last.sequence,
                    first.event_id,
                    f"the record checkpoint {last.number} signed was changed",
                )
            anchor = chain.Anchor(last.sequence, last.head_hash)
            records = records[1:]
        verdict = chain.verify(records, [], {}, anchor=anchor, to_head=False)
        if verdict.problem is not None:
            return verdict.problem
        end = (
            (records[-1].sequence, records[-1].hash) if records else (anchor.sequence, anchor.hash)
        )
        head = state.head or (0, chain.GENESIS_HASH)
        if head[0] > end[0]:
            return chain.Finding(
                chain.Problem.REMOVED,
                end[0] + 1,
                "",
                f"the chain head is at sequence {head[0]} but the records end at {end[0]}: "
                "the newest records were deleted",
            )
        if head != end:
            return chain.Finding(
                chain.Problem.REMOVED if state.head is None else chain.Problem.INSERTED,
                head[0] + 1 if state.head is not None else end[0],
                "",
                f"the chain head (sequence {head[0]}) does not match the newest record "
                f"(sequence {end[0]}): the head was rewound or removed",
            )
        if appended is not None:
            seq, hash_ = appended
            if seq > end[0]:
                return chain.Finding(
                    chain.Problem.REMOVED,
                    end[0] + 1,
                    "",
                    f"this service appended up to sequence {seq} but the records end at "
                    f"{end[0]}: the newest records were deleted",
                )
            mine = next((r for r in records if r.sequence == seq), None)
            if mine is not None and mine.hash != hash_:
                return chain.Finding(
                    chain.Problem.EDITED,
                    seq,
                    mine.event_id,
                    f"record {seq} is not the one this service appended",
                )
        return None

    async def _settle(self, findings: Mapping[str, chain.Finding | None]) -> None:
        """Raises new alarms (log, metric, journal) and clears those that verified since."""
        raised: list[dict[str, Any]] = []
        for ws, finding in findings.items():
            before = self.alarms.get(ws)
            if finding is None:
                if before is not None:
                    del self.alarms[ws]
                    log.warning("audit_chain_alarm_cleared", workspace_id=ws)
                continue
            if finding == before:
                continue
            self.alarms[ws] = finding
            ALARMS.labels(finding.kind.value).inc()
            log.error(
                "audit_chain_alarm",
                workspace_id=ws,
                kind=finding.kind.value,
                sequence=finding.sequence,
                reason=finding.reason,
            )
            raised.append(
                {
                    "type": "alarm",
                    "workspace_id": ws,
                    "kind": finding.kind.value,
                    "sequence": finding.sequence,
                    "reason": finding.reason,
                    "at": chain.format_time(self._clock()),
                }
            )
        IN_ALARM.set(len(self.alarms))
        await asyncio.to_thread(self._journal.append, raised)

    async def health_detail(self) -> str | None:
        """A health detail while any workspace is in alarm (not a reason to stop serving)."""
        if not self.alarms:
            return None
        ws, finding = sorted(self.alarms.items())[0]
        return (
            f"audit chain not signed in {len(self.alarms)} workspace(s), first {ws}: "
            f"{finding.kind.value} at sequence {finding.sequence}: {finding.reason}"
        )
