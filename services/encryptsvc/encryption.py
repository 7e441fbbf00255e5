"""EncryptEvents as domain logic: one policy and key snapshot per batch, per-event outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.hostile_json import parse_object
from services.common.limits import check_count
from services.common.server.metrics import UNCOUNTED, Incrementing
from services.common.vocabulary import EncryptionFormat, no_active_key
from services.encryptsvc.envelope import (
    MAX_CEK_USES,
    RecipientKey,
    Sealer,
    ValueTooLong,
    new_sealer,
)
from services.encryptsvc.selection import Selection, compile_selection

# Hand the event loop back after this much work (an event counts 1 plus its fields) so watch
# streams and other calls are not starved: counting events alone let a batch of few events with
# huge [*] arrays (16 MB of them fits a request) hold the loop for seconds.
_YIELD_AFTER = 512


@dataclass(frozen=True)
class Policy:
    """One version of a destination's encryption policy."""

    destination_id: str
    version: int
    enabled: bool
    format: EncryptionFormat
    fields: tuple[str, ...]

    @property
    def active(self) -> bool:
        return self.enabled and self.version > 0


@dataclass(frozen=True)
class Snapshot:
    """What one batch is encrypted under: a policy version and (when enabled) a key version."""

    policy: Policy
    key: RecipientKey | None


class SnapshotSource(Protocol):
    async def snapshot(self, destination_id: str) -> Snapshot: ...


@dataclass(frozen=True)
class Limits:
    max_batch_events: int = 1000
    max_event_bytes: int = 256 * 1024
    max_depth: int = 32
    max_cek_uses: int = MAX_CEK_USES


@dataclass(frozen=True)
class EventError:
    """Why one event was not encrypted: a status code name, a message and a path, no value."""

    code: str
    message: str
    path: str = ""


@dataclass(frozen=True)
class EventOutcome:
    event: bytes | None
    error: EventError | None
    encrypted_fields: int = 0


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[EventOutcome]
    policy_version: int
    kid: str
    enabled: bool
    format: EncryptionFormat


class _Refused(Exception):
    """One event fails; carries its EventError."""

    def __init__(self, error: EventError) -> None:
        super().__init__(error.message)
        self.error = error


def _invalid(message: str, path: str = "") -> _Refused:
    return _Refused(EventError("INVALID_ARGUMENT", message, path))


@dataclass(frozen=True)
class EncryptCounts:
    """What the encryptor counts, once per batch (never per field: the hot path)."""

    events: Incrementing = UNCOUNTED  # events encrypted (a policy that encrypts)
    failed_events: Incrementing = UNCOUNTED  # events answered with a per-event error
    fields: Incrementing = UNCOUNTED  # values sealed
    data_keys: Incrementing = UNCOUNTED  # content keys made and wrapped (public-key operations)
    data_key_uses: Incrementing = UNCOUNTED  # values sealed under a content key


class Encryptor:
    """Encrypts batches of JSON events to a destination's active key, per its policy."""

    def __init__(
        self, source: SnapshotSource, limits: Limits, counts: EncryptCounts = EncryptCounts()
    ) -> None:
        self._source = source
        self._limits = limits
        self._counts = counts

    async def encrypt(self, destination_id: str, events: Sequence[bytes]) -> BatchResult:
        if not destination_id.strip():
            raise InvalidArgument("destination_id is empty; name the destination to encrypt for")
        check_count(len(events), self._limits.max_batch_events, "events")
        snapshot = await self._source.snapshot(destination_id)
        policy = snapshot.policy
        if not policy.active:
            return BatchResult(
                [EventOutcome(bytes(raw), None) for raw in events],
                policy.version,
                "",
                False,
                policy.format,
            )
        if snapshot.key is None:
            # Encryption is enabled: without a key nothing may leave, so the batch fails.
            raise FailedPrecondition(no_active_key(destination_id))
        selection = compile_selection(policy.fields)
        sealer = new_sealer(
            policy.format, snapshot.key, destination_id, max_uses=self._limits.max_cek_uses
        )
        outcomes: list[EventOutcome] = []
        work = fields = failed = 0
        for raw in events:
            if work >= _YIELD_AFTER:
                await asyncio.sleep(0)
                work = 0
            try:
                outcome = self._encrypt_one(raw, selection, sealer)
            except _Refused as refused:
                outcome = EventOutcome(None, refused.error)
            outcomes.append(outcome)
            work += 1 + outcome.encrypted_fields
            fields += outcome.encrypted_fields
            failed += outcome.error is not None
        self._count(len(outcomes) - failed, failed, fields, sealer.ceks_issued)
        return BatchResult(outcomes, policy.version, snapshot.key.kid, True, policy.format)

    def _count(self, events: int, failed: int, fields: int, data_keys: int) -> None:
        counts = self._counts
        counts.events.inc(events)
        if failed:
            counts.failed_events.inc(failed)
        if fields:
            counts.fields.inc(fields)
        if data_keys:
            counts.data_keys.inc(data_keys)
            counts.data_key_uses.inc(fields)

    def _encrypt_one(self, raw: bytes, selection: Selection, sealer: Sealer) -> EventOutcome:
        event = self._parse(raw)
        located = selection.locate(event)
        if located and sealer.binds:
            message_id = event.get("messageId")
            if not isinstance(message_id, str) or not message_id.strip():
                # Binding to "" would let a ciphertext move between such events unnoticed.
                raise _invalid(
                    "the event has no messageId (or a blank one); every encrypted field is "
                    "bound to it, so set a unique messageId",
                    "messageId",
                )
        else:
            message_id = ""
        for container, key, concrete in located:
            plaintext = orjson.dumps(container[key])  # type: ignore[index]
            try:
                container[key] = sealer.seal(plaintext, message_id, concrete)  # type: ignore[index]
            except ValueTooLong as exc:
                raise _Refused(
                    EventError(
                        "FAILED_PRECONDITION",
                        f"the value at {concrete} is too long for the SEGMENT_RSA_OAEP "
                        f"format ({exc.length} bytes as JSON, at most {exc.limit} for this key); "
                        "use the JWE format, which has no size limit",
                        concrete,
                    )
                ) from None
        # Always re-serialise, even with nothing found: the input could hide a second copy of a
        # named field (duplicate keys) that a downstream parser would read.
        return EventOutcome(orjson.dumps(event), None, len(located))

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            return parse_object(
                raw,
                what="the event",
                max_bytes=self._limits.max_event_bytes,
                max_depth=self._limits.max_depth,
            )
        except InvalidArgument as exc:
            raise _invalid(exc.message) from None
