"""The one parser for JSON a caller sends: size, UTF-8, syntax, object, depth, NUL, exact numbers.

encryptsvc's events and policysvc's sample events both go through ``parse_object``. Every refusal
is InvalidArgument whose message starts with what was parsed (``the event``,
``sample_events[3]``), names the limit or the fix, and never quotes the input (it may be PHI).
Numbers are kept exactly as written (phiseal_decrypt.exactjson): writing the result back with
``orjson.dumps`` gives every number digit for digit, so nothing outside an encrypted field is
rewritten and an encrypted number decrypts to the JSON that was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from phiseal_decrypt import exactjson
from services.common.errors import InvalidArgument

# A number kept exactly (an orjson.Fragment in a parsed value) as its JSON text, else None.
fragment_text = exactjson.fragment_text

_NUL_ESCAPE = b"\\u0000"


def _count_brackets(raw: bytes) -> int:
    return raw.count(b"{") + raw.count(b"[")


_brackets: Callable[[bytes], int] = _count_brackets
try:  # built from _fastwalk.c when the machine can compile it (pyproject.toml, ext-modules)
    from services.common._fastwalk import brackets as _native_brackets

    _brackets = _native_brackets
except ImportError:  # pragma: no cover - exercised on machines without a C compiler
    pass


def parse_object(raw: bytes, *, what: str, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """``raw`` as one JSON object within the limits, or InvalidArgument saying why."""
    if len(raw) > max_bytes:
        raise InvalidArgument(
            f"{what} is {len(raw)} bytes, more than the limit of {max_bytes}; send less"
        )
    try:
        value = exactjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # Decoding is checked only after a failure: orjson validates UTF-8 itself, and the
        # hot path should not pay twice. The byte offset is the useful part of the message.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidArgument(
                f"{what} is not valid UTF-8 (first bad byte at {bad.start})"
            ) from None
        # The parsers' messages name a problem and a position, never the text around it.
        raise InvalidArgument(f"{what} is not valid JSON ({exc.msg} at byte {exc.pos})") from None
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"{what} is a JSON {json_type(value)}, not an object; send one JSON object"
        )
    # Counting brackets is a cheap upper bound on depth; walk only when it could be too deep.
    # (In C: bytes.count reads a byte at a time, twice, 0.9 us for a usual event; one
    # vectorised pass takes 0.2.)
    if _brackets(raw) > max_depth and json_depth(value) > max_depth:
        raise InvalidArgument(f"{what} nests deeper than the limit of {max_depth} levels")
    # PostgreSQL (and many destinations) cannot store NUL in text; an escaped \u0000 is the
    # only way one gets past the UTF-8 and syntax checks, so look for it before walking.
    # The backslash is looked for first: one byte is found with memchr, the six-byte escape
    # is a slower search (0.7 us for a usual event, which rarely has any backslash).
    if b"\\" in raw and _NUL_ESCAPE in raw and _holds_nul(value):
        raise InvalidArgument(f"{what} has a NUL character (\\u0000) in a string or key; remove it")
    return value


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (for messages that must not quote the value)."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


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


def _holds_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            if any("\x00" in key for key in node):
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False
