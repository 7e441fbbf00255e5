"""Hostile input: explicit size, count and depth limits, and checks that answer INVALID_ARGUMENT.

Every message names the limit and the fix and never quotes the input (it may be PHI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from services.common.errors import InvalidArgument


@dataclass(frozen=True)
class Limits:
    """The explicit ceilings a service enforces on what arrives."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 1000
    max_event_bytes: int = 256 * 1024
    max_json_depth: int = 32
    max_string_chars: int = 64 * 1024

    def check_batch(self, count: int, what: str = "events") -> None:
        if count > self.max_batch_events:
            raise InvalidArgument(
                f"{count} {what} in one request; the limit is {self.max_batch_events}: "
                "split the batch"
            )

    def check_text(self, value: str, what: str) -> None:
        """A string field from a request: bounded length, no NUL (PostgreSQL refuses it)."""
        if len(value) > self.max_string_chars:
            raise InvalidArgument(
                f"{what} is {len(value)} characters; the limit is {self.max_string_chars}"
            )
        if "\x00" in value:
            raise InvalidArgument(f"{what} contains a NUL character")

    def parse_event(self, raw: bytes, what: str = "event") -> dict[str, Any]:
        """One JSON object from bytes: size, UTF-8, syntax, type and nesting depth checked."""
        return parse_json_object(
            raw, what=what, max_bytes=self.max_event_bytes, max_depth=self.max_json_depth
        )


def check_utf8(data: bytes, what: str) -> str:
    """``data`` decoded, or InvalidArgument naming the byte offset of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"{what} is not valid UTF-8 (first bad byte at {exc.start})"
        ) from None


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``{}`` and ``[]`` are 1).

    Iterative, so a hostile value cannot exhaust the Python stack.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json_object(raw: bytes, *, what: str, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Parses ``raw`` as one JSON object within the limits, or raises InvalidArgument."""
    if len(raw) > max_bytes:
        raise InvalidArgument(f"{what} is {len(raw)} bytes; the limit is {max_bytes}")
    check_utf8(raw, what)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson's message quotes no input, but a position is all a caller needs.
        raise InvalidArgument(f"{what} is not valid JSON (at byte {exc.pos})") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object, not {type(value).__name__}")
    if json_depth(value) > max_depth:
        raise InvalidArgument(f"{what} nests deeper than {max_depth} levels")
    return value
