"""What auditsvc accepts as an audit record: one set of rules, run where an entry is made too.

auditsvc applies these to every event RecordEvents receives; keysvc and policysvc apply the
same functions to an AuditEntry before it enters their outbox, in the transaction of the change
it records. An entry auditsvc would refuse therefore fails its action (INVALID_ARGUMENT) instead
of reaching the outbox and stalling delivery.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.common.errors import InvalidArgument
from services.common.hostile_json import json_depth

MAX_TEXT = 512
# Details carry names and versions (a policy's field list at most), never payloads.
MAX_DETAILS_BYTES = 256 * 1024
MAX_DETAILS_DEPTH = 32
OUTCOMES = ("succeeded", "failed", "denied")
# Integers beyond this do not survive a round trip through a JSON double.
MAX_SAFE_INTEGER = 2**53
# The text fields of a record, each at most MAX_TEXT printable characters.
TEXT_FIELDS = (
    "workspace_id",
    "actor_user_id",
    "end_user_id",
    "target",
    "request_id",
    "service",
    "access_reason",
)

# Past participles that do not end in "ed". A closed list keeps the check decidable; add to
# it when a service needs a new verb.
IRREGULAR_PAST = frozenset(
    {
        "Begun",
        "Bound",
        "Brought",
        "Built",
        "Bought",
        "Caught",
        "Chosen",
        "Done",
        "Drawn",
        "Forgotten",
        "Found",
        "Frozen",
        "Given",
        "Got",
        "Gotten",
        "Held",
        "Hidden",
        "Kept",
        "Known",
        "Laid",
        "Led",
        "Left",
        "Lent",
        "Lost",
        "Made",
        "Meant",
        "Met",
        "Paid",
        "Put",
        "Read",
        "Rebuilt",
        "Redone",
        "Rerun",
        "Reset",
        "Rewritten",
        "Run",
        "Seen",
        "Sent",
        "Set",
        "Shown",
        "Shut",
        "Sold",
        "Spent",
        "Split",
        "Spun",
        "Taken",
        "Told",
        "Thrown",
        "Undone",
        "Withdrawn",
        "Won",
        "Written",
    }
)
_WORD = re.compile(r"[A-Z][A-Za-z0-9]*")


def check_event_type(event_type: str) -> None:
    """Title Case words, single spaces, the last a past participle ("Audit Log Viewed")."""
    words = event_type.split(" ")
    if not event_type or len(event_type) > 100:
        raise InvalidArgument("event_type is required and at most 100 characters")
    if any(not _WORD.fullmatch(w) for w in words):
        raise InvalidArgument(
            f"event_type {event_type!r} must be Title Case words separated by single spaces, "
            "e.g. 'Destination Encryption Enabled'"
        )
    last = words[-1]
    if len(words) < 2 or not (last.endswith("ed") or last in IRREGULAR_PAST):
        raise InvalidArgument(
            f"event_type {event_type!r} must name an object and end in a past-tense verb, "
            "e.g. 'Key Pair Generated' or 'Audit Log Viewed'"
        )


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8, non-ASCII unescaped: the form hashes are taken of."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def normalize_details(value: Any) -> Any:
    """Details as they will read back from jsonb: integral numbers as ints.

    Protobuf Struct numbers are doubles; ``3.0`` and ``3`` must hash the same before and after
    storage, so integral values become ints. Raises ValueError on what JSON cannot carry.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("details strings may not contain NUL characters")
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("details numbers must be finite")
        if abs(value) >= MAX_SAFE_INTEGER:
            raise ValueError("details numbers must be below 2^53 in magnitude")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): normalize_details(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize_details(v) for v in value]
    raise ValueError(f"details cannot hold a {type(value).__name__}")


def check_record(
    *,
    event_id: str,
    event_type: str,
    outcome: str,
    timestamp: datetime,
    texts: Mapping[str, str],
    details: Mapping[str, Any],
) -> tuple[str, datetime, Any]:
    """(canonical event id, UTC timestamp, normalized details), or InvalidArgument naming the
    field and the rule, never the value (it may be PHI)."""
    try:
        canonical_id = str(uuid.UUID(event_id))
    except ValueError:
        raise InvalidArgument(f"event_id {event_id[:80]!r} is not a UUID") from None
    for name in ("workspace_id", "actor_user_id"):
        if not texts.get(name, "").strip():
            raise InvalidArgument(f"event {canonical_id}: {name} is required")
    for name in TEXT_FIELDS:
        value = texts.get(name, "")
        if len(value) > MAX_TEXT or not value.isprintable():
            raise InvalidArgument(
                f"event {canonical_id}: {name} must be printable text of at most "
                f"{MAX_TEXT} characters"
            )
    check_event_type(event_type)
    if outcome not in OUTCOMES:
        raise InvalidArgument(
            f"event {canonical_id}: outcome is required (succeeded, failed or denied)"
        )
    if timestamp.tzinfo is None:
        raise InvalidArgument(f"event {canonical_id}: timestamp is required (UTC)")
    try:
        normalized = normalize_details(dict(details))
    except ValueError as exc:
        raise InvalidArgument(f"event {canonical_id}: {exc}") from None
    if json_depth(normalized) > MAX_DETAILS_DEPTH:
        raise InvalidArgument(
            f"event {canonical_id}: details nest deeper than {MAX_DETAILS_DEPTH} levels"
        )
    if len(canonical_json(normalized)) > MAX_DETAILS_BYTES:
        raise InvalidArgument(
            f"event {canonical_id}: details are larger than {MAX_DETAILS_BYTES} bytes as JSON; "
            "record names and versions, not payloads"
        )
    return canonical_id, timestamp.astimezone(UTC), normalized
