"""EncryptEvents as domain logic: one policy and key snapshot per batch, per-event outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

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
    plaintexts_of,
)
from services.encryptsvc.selection import Selection, compile_selection

# Hand the event loop back after this much work (an event counts 1 plus its fields) so watch
# streams and other calls are not starved: counting events alone let a batch of few events with
# huge [*] arrays (16 MB of them fits a request) hold the loop for seconds.
_YIELD_AFTER = 512
# Bytes a result adds to the response beyond its event: protobuf tags and lengths.
_RESULT_OVERHEAD = 24
# The response's own fields (versions, kid, format) beyond the results.
_RESPONSE_OVERHEAD = 1024
# Room kept for each event not yet answered, so that its error result always fits: error texts
# are cut to these many bytes (messages are a few hundred, paths rarely longer than 100).
_MAX_ERROR_MESSAGE = 600
_MAX_ERROR_PATH = 300
ERROR_RESERVE = 1024


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
    # An event whose encrypted form would be larger fails alone (docs/format.md, "Output size").
    max_event_output_bytes: int = 1024 * 1024
    # The largest response gRPC will send (the server's PHISEAL_MAX_MESSAGE_BYTES).
    max_response_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class EventError:
    """Why one event was not encrypted: a status code name, a message and a path, no value."""

    code: str
    message: str
    path: str = ""


class EventOutcome(NamedTuple):
    """One event's answer: its encrypted bytes, or why not. A tuple, not a frozen dataclass:
    one is made per event, and a frozen dataclass's __init__ cost 0.5 us of a 20 us event."""

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
        # The response must stay under the largest message gRPC sends, or the whole batch fails
        # after all its work: each event gets what is left, less room for the others' errors.
        used = _RESPONSE_OVERHEAD + len(snapshot.key.kid)
        for index, raw in enumerate(events):
            if work >= _YIELD_AFTER:
                await asyncio.sleep(0)
                work = 0
            reserve = (len(events) - index - 1) * ERROR_RESERVE
            room = self._limits.max_response_bytes - used - reserve - _RESULT_OVERHEAD
            try:
                outcome = self._encrypt_one(raw, selection, sealer, room)
            except _Refused as refused:
                outcome = EventOutcome(None, _bounded(refused.error))
            outcomes.append(outcome)
            used += _result_size(outcome)
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

    def _check_size(self, size: int, room: int, fields: int) -> None:
        """Refuses an event whose encrypted form (``size`` bytes) passes a limit."""
        limit = self._limits.max_event_output_bytes
        if size > limit:
            raise _Refused(
                EventError(
                    "RESOURCE_EXHAUSTED",
                    f"encrypted, this event would be {size} bytes ({fields} encrypted fields), "
                    f"more than the per-event limit of {limit}; send fewer or shorter named "
                    "values per event (e.g. split a long array across events)",
                )
            )
        if size > room:
            raise _Refused(
                EventError(
                    "RESOURCE_EXHAUSTED",
                    f"the response has no room left for this event (about {size} bytes "
                    f"encrypted; a response carries at most {self._limits.max_response_bytes}); "
                    "send it again in another batch, or send smaller batches",
                )
            )

    def _encrypt_one(
        self, raw: bytes, selection: Selection, sealer: Sealer, room: int
    ) -> EventOutcome:
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
        # Budgeted before any encryption: the sealed length is known from the plaintext's.
        # Per field: the sealer's fixed part (exact, once per event) plus, for JWE, 4/3 of the
        # value and of the path (base64url) rounded up; a path's JSON escapes are left to the
        # exact check after sealing. An exact length per field cost a fifth of a batch.
        estimate = len(raw)
        plaintexts: list[bytes] = []
        if located:
            plaintexts, growth, total = plaintexts_of(located)
            estimate += len(located) * (sealer.sealed_length(0, message_id, "") + 4)
            # A SEGMENT value is one RSA block whatever its length.
            estimate += growth if sealer.binds else -total
        self._check_size(estimate, room, len(located))
        if located:
            try:
                sealer.seal_into(plaintexts, located, message_id)
            except ValueTooLong as exc:
                raise _Refused(
                    EventError(
                        "FAILED_PRECONDITION",
                        f"the value at {exc.path} is too long for the SEGMENT_RSA_OAEP "
                        f"format ({exc.length} bytes as JSON, at most {exc.limit} for this key); "
                        "use the JWE format, which has no size limit",
                        exc.path,
                    )
                ) from None
        # Always re-serialise, even with nothing found: the input could hide a second copy of a
        # named field (duplicate keys) that a downstream parser would read.
        output = orjson.dumps(event)
        # Re-serialising may spell a number longer than the input did: the estimate is checked.
        self._check_size(len(output), room, len(located))
        return EventOutcome(output, None, len(located))

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


def _cut(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def _bounded(error: EventError) -> EventError:
    """The error with its texts cut so that its result fits ERROR_RESERVE."""
    return EventError(
        error.code, _cut(error.message, _MAX_ERROR_MESSAGE), _cut(error.path, _MAX_ERROR_PATH)
    )


def _result_size(outcome: EventOutcome) -> int:
    """An upper bound of what one result adds to the response."""
    if outcome.error is not None:
        error = outcome.error
        return _RESULT_OVERHEAD + sum(
            len(text.encode()) for text in (error.code, error.message, error.path)
        )
    return _RESULT_OVERHEAD + len(outcome.event or b"")
