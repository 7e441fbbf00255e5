"""Field paths: the one syntax policies use to name parts of an event, and the walker over them.

Grammar (documented in the README):

    path     := root ( "." key | "[" quoted "]" | "[*]" | "[" index "]" )*
    root     := "context" | "traits" | "properties"
    key      := [A-Za-z0-9_$@:-]+        (any other key: ["key with.dots or spaces"])
    quoted   := '"' JSON-string-body '"'
    "[*]"    := every element of an array
    index    := a non-negative integer: one element of an array

Examples: ``traits.email``, ``context.traits.phone``, ``traits.address.zipcode``,
``properties.allergy[*]``, ``properties.items[*].sku``, ``traits["first name"]``.

A path names a whole value, whatever its JSON type; encrypting it replaces that value. Where an
event's shape drifts from the path (a string where the path goes on into an array or object, an
object where it indexes an array), the value found at that point is what the path names in this
event: ``sealed_places`` gives it, and encryptsvc encrypts it whole (docs/format.md, "Shape drift").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from services.common.errors import InvalidArgument

ROOTS = ("context", "traits", "properties")
MAX_PATH_LENGTH = 512
MAX_SEGMENTS = 32

_KEY = re.compile(r"[A-Za-z0-9_$@:\-]+")
_INDEX = re.compile(r"\[(\d{1,9})\]")


class Each:
    """The ``[*]`` segment: every element of an array."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "[*]"


EACH = Each()
Segment = str | int | Each


@dataclass(frozen=True)
class FieldPath:
    """A parsed path; ``str()`` gives its canonical spelling."""

    segments: tuple[Segment, ...]

    def __str__(self) -> str:
        out = []
        for i, seg in enumerate(self.segments):
            if isinstance(seg, Each):
                out.append("[*]")
            elif isinstance(seg, int):
                out.append(f"[{seg}]")
            else:
                out.append(_key_text(seg, first=i == 0))
        return "".join(out)

    @property
    def root(self) -> str:
        return str(self.segments[0])

    @property
    def last_key(self) -> str | None:
        """The innermost object key: what classification matchers look at."""
        for seg in reversed(self.segments):
            if isinstance(seg, str):
                return seg
        return None

    def covers(self, other: FieldPath) -> bool:
        """True if ``other`` lies inside (or is) the value this path names."""
        if len(other.segments) < len(self.segments):
            return False
        for mine, theirs in zip(self.segments, other.segments, strict=False):
            if isinstance(mine, Each):
                if not isinstance(theirs, Each | int):
                    return False
            elif mine != theirs:
                return False
        return True


def _key_text(key: str, *, first: bool) -> str:
    if _KEY.fullmatch(key):
        return key if first else f".{key}"
    return f"[{json.dumps(key, ensure_ascii=False)}]"


def parse(text: str) -> FieldPath:
    """Parses and validates a path; InvalidArgument says what is wrong and where."""
    if not isinstance(text, str) or not text:
        raise InvalidArgument("a field path is empty; use e.g. traits.email")
    if len(text) > MAX_PATH_LENGTH:
        raise InvalidArgument(f"a field path is longer than {MAX_PATH_LENGTH} characters")
    segments: list[Segment] = []
    pos = 0
    first = _KEY.match(text, pos)
    if first is None:
        raise InvalidArgument(f"field path {text!r} must start with one of {', '.join(ROOTS)}")
    segments.append(first.group())
    pos = first.end()
    while pos < len(text):
        char = text[pos]
        if char == ".":
            match = _KEY.match(text, pos + 1)
            if match is None:
                raise InvalidArgument(
                    f'field path {text!r}: expected a key after "." at position {pos + 1} '
                    '(quote unusual keys as ["my key"])'
                )
            segments.append(match.group())
            pos = match.end()
        elif text.startswith("[*]", pos):
            segments.append(EACH)
            pos += 3
        elif text.startswith('["', pos):
            key, pos = _quoted(text, pos + 1)
            segments.append(key)
        elif (index := _INDEX.match(text, pos)) is not None:
            segments.append(int(index.group(1)))
            pos = index.end()
        else:
            raise InvalidArgument(
                f"field path {text!r}: unexpected {char!r} at position {pos}; "
                'use .key, ["key"], [*] or [0]'
            )
    if segments[0] not in ROOTS:
        raise InvalidArgument(
            f"field path {text!r} is outside the encryptable objects: it must start with "
            f"{', '.join(ROOTS)}"
        )
    if len(segments) < 2:
        raise InvalidArgument(
            f"field path {text!r} names a whole object; name a field inside it, e.g. {text}.email"
        )
    if len(segments) > MAX_SEGMENTS:
        raise InvalidArgument(f"field path {text!r} is deeper than {MAX_SEGMENTS} segments")
    return FieldPath(tuple(segments))


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """Reads a JSON string starting at ``pos`` followed by "]"; returns it and the next index."""
    try:
        value, end = json.JSONDecoder().raw_decode(text, pos)
    except json.JSONDecodeError:
        raise InvalidArgument(f"field path {text!r}: unterminated quoted key") from None
    if not isinstance(value, str) or not text.startswith("]", end):
        raise InvalidArgument(f'field path {text!r}: a quoted key must look like ["my key"]')
    if not value:
        raise InvalidArgument(f"field path {text!r}: a quoted key is empty")
    return value, end + 1


def parse_selection(paths: Iterable[str]) -> list[FieldPath]:
    """Parses a policy's field list: canonical, de-duplicated, sorted, without overlaps."""
    parsed = {str(p): p for p in (parse(text) for text in paths)}
    ordered = [parsed[key] for key in sorted(parsed)]
    for a in ordered:
        for b in ordered:
            if a is not b and a.covers(b):
                raise InvalidArgument(
                    f"field paths overlap: {a} already contains {b}; select only one of them"
                )
    return ordered


@dataclass(frozen=True)
class Location:
    """Where a path matched in one event: ``container[key]`` holds the value."""

    container: dict[str, Any] | list[Any]
    key: str | int
    concrete: str  # the path with [*] resolved to indices, e.g. properties.items[2].sku


def find(event: dict[str, Any], path: FieldPath) -> Iterator[Location]:
    """Every place ``path`` matches in ``event``; missing parts are skipped silently."""
    yield from _walk(event, path.segments, 0, "")


def _walk(node: Any, segments: tuple[Segment, ...], i: int, prefix: str) -> Iterator[Location]:
    seg = segments[i]
    last = i == len(segments) - 1
    if isinstance(seg, str):
        if not isinstance(node, dict) or seg not in node:
            return
        concrete = prefix + _key_text(seg, first=not prefix)
        if last:
            yield Location(node, seg, concrete)
        else:
            yield from _walk(node[seg], segments, i + 1, concrete)
        return
    if not isinstance(node, list):
        return
    indices = range(len(node)) if isinstance(seg, Each) else [seg] if seg < len(node) else []
    for index in indices:
        concrete = f"{prefix}[{index}]"
        if last:
            yield Location(node, index, concrete)
        else:
            yield from _walk(node[index], segments, i + 1, concrete)


def sealed_places(event: dict[str, Any], path: FieldPath) -> Iterator[Location]:
    """What encrypting ``path`` replaces in ``event``: every match, and where the event's shape
    cuts the path (a value of another type than the next segment needs), the value there whole.

    Missing keys and indices past an array's end name nothing and are skipped, as in ``find``.
    """
    yield from _walk_sealed(event, None, None, path.segments, 0, "")


def _walk_sealed(
    node: Any,
    container: dict[str, Any] | list[Any] | None,
    key: str | int | None,
    segments: tuple[Segment, ...],
    i: int,
    prefix: str,
) -> Iterator[Location]:
    if i == len(segments):
        if container is not None and key is not None:  # paths have at least two segments
            yield Location(container, key, prefix)
        return
    seg = segments[i]
    if isinstance(seg, str):
        if isinstance(node, dict):
            if seg in node:
                concrete = prefix + _key_text(seg, first=not prefix)
                yield from _walk_sealed(node[seg], node, seg, segments, i + 1, concrete)
            return
    elif isinstance(node, list):
        indices = range(len(node)) if isinstance(seg, Each) else [seg] if seg < len(node) else []
        for index in indices:
            yield from _walk_sealed(node[index], node, index, segments, i + 1, f"{prefix}[{index}]")
        return
    if container is not None and key is not None:  # the event itself is always an object
        yield Location(container, key, prefix)


def leaf_paths(event: dict[str, Any]) -> list[str]:
    """Every key path under the three roots, arrays as [*], sorted and de-duplicated."""
    found: set[str] = set()
    for root in ROOTS:
        value = event.get(root)
        if isinstance(value, dict):
            found.update(_leaves(value, (root,)))
    return sorted(found)


def _leaves(node: Any, segments: tuple[Segment, ...]) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key:
                path = (*segments, key)
                yield str(FieldPath(path))
                if len(path) < MAX_SEGMENTS:
                    yield from _leaves(value, path)
    elif isinstance(node, list) and len(segments) < MAX_SEGMENTS:
        for value in node:
            if isinstance(value, dict | list):
                yield from _leaves(value, (*segments, EACH))
