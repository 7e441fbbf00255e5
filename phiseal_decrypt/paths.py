"""Which values to decrypt: field paths in the syntax PHIseal's policies use (the policy's own).

    path := root ( "." key | '["' quoted '"]' | "[*]" | "[" index "]" )*

A value is decrypted when it sits at a path, or at a prefix of one: PHIseal encrypts a value
whole where an event's shape cuts a path (a string where ``properties.allergy[*]`` wants an
array), and binds it to that shorter place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

# None stands for [*]: any index.
Pattern = tuple[str | int | None, ...]
Place = tuple[str | int, ...]

_KEY = re.compile(r"[A-Za-z0-9_$@:\-]+")
_INDEX = re.compile(r"\[(\d{1,9})\]")


def parse_path(text: str) -> Pattern:
    """One path; ValueError says what is wrong."""
    first = _KEY.match(text)
    if first is None:
        raise ValueError(f"field path {text!r} must start with a key such as traits")
    segments: list[str | int | None] = [first.group()]
    pos = first.end()
    while pos < len(text):
        if text[pos] == "." and (key := _KEY.match(text, pos + 1)) is not None:
            segments.append(key.group())
            pos = key.end()
        elif text.startswith("[*]", pos):
            segments.append(None)
            pos += 3
        elif text.startswith('["', pos):
            try:
                value, end = json.JSONDecoder().raw_decode(text, pos + 1)
            except json.JSONDecodeError:
                raise ValueError(f"field path {text!r}: unterminated quoted key") from None
            if not isinstance(value, str) or not text.startswith("]", end):
                raise ValueError(f'field path {text!r}: a quoted key must look like ["my key"]')
            segments.append(value)
            pos = end + 1
        elif (index := _INDEX.match(text, pos)) is not None:
            segments.append(int(index.group(1)))
            pos = index.end()
        else:
            raise ValueError(f"field path {text!r}: unexpected {text[pos]!r} at position {pos}")
    return tuple(segments)


class PathFilter:
    """The places a set of field paths names, and the places on the way to them."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.patterns = [parse_path(p) for p in paths]

    def on_path(self, place: Place) -> bool:
        """Whether ``place`` is a path's place or a prefix of one (so worth looking into)."""
        return any(_prefix(place, pattern) for pattern in self.patterns)


def _prefix(place: Place, pattern: Pattern) -> bool:
    if len(place) > len(pattern):
        return False
    for have, want in zip(place, pattern, strict=False):
        if want is None:
            if not isinstance(have, int):
                return False
        elif have != want:
            return False
    return True
