"""Hostile input: explicit size, count and depth limits, and checks that answer INVALID_ARGUMENT.

Every message names the limit and the fix and never quotes the input (it may be PHI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.common.errors import InvalidArgument
from services.common.hostile_json import parse_object


@dataclass(frozen=True)
class Limits:
    """The explicit ceilings a service enforces on what arrives."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 1000
    max_event_bytes: int = 256 * 1024
    max_json_depth: int = 32
    max_string_chars: int = 64 * 1024

    def check_batch(self, count: int, what: str = "events") -> None:
        check_count(count, self.max_batch_events, what)

    def check_text(self, value: str, what: str) -> None:
        """A string field from a request: bounded length, no NUL (PostgreSQL refuses it)."""
        if len(value) > self.max_string_chars:
            raise InvalidArgument(
                f"{what} is {len(value)} characters; the limit is {self.max_string_chars}"
            )
        if "\x00" in value:
            raise InvalidArgument(f"{what} contains a NUL character")

    def parse_event(self, raw: bytes, what: str = "event") -> dict[str, Any]:
        """One JSON object from bytes: the one hostile-JSON parser with these limits."""
        return parse_object(
            raw, what=what, max_bytes=self.max_event_bytes, max_depth=self.max_json_depth
        )


def check_count(count: int, limit: int, what: str) -> None:
    """More items in one request than a documented per-request limit: INVALID_ARGUMENT.

    Not RESOURCE_EXHAUSTED: that code means a quota or capacity that may free up, and clients
    (and grpc retry policies) retry it; this request fails the same way every time until split.
    """
    if count > limit:
        raise InvalidArgument(
            f"{count} {what} in one request, more than the limit of {limit}: split the request"
        )


def check_utf8(data: bytes, what: str) -> str:
    """``data`` decoded, or InvalidArgument naming the byte offset of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"{what} is not valid UTF-8 (first bad byte at {exc.start})"
        ) from None
