"""A policy's field paths compiled once into a trie, located in an event in one walk.

``fieldpath.find`` walks the event once per path and spells every key of every match with a
regex; on the hot path that was a third of a batch's time. Here the paths of one policy version
share one walk, and each key's spelling is worked out when the policy is compiled. The result is
the same set of places ``fieldpath.sealed_places`` gives for each path, the places where the
event's shape cuts a path included (tests/encryptsvc/test_selection.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.fieldpath import Each, FieldPath, Segment, parse_selection

# container[key] holds a named value; concrete is its path with [*] resolved to indices.
Located = tuple[dict[str, Any] | list[Any], str | int, str]


@dataclass(frozen=True)
class _Node:
    """Children of one point in the trie; a child of None means "encrypt the value here"."""

    keys: tuple[tuple[str, str, _Node | None], ...]  # (key, its spelling, child)
    items: tuple[tuple[Each | int, _Node | None], ...]  # ([*] or an index, child)


@dataclass(frozen=True)
class Selection:
    """The compiled form of one policy's field list."""

    paths: tuple[FieldPath, ...]
    _root: _Node

    def locate(self, event: dict[str, Any]) -> list[Located]:
        """Every place a path of this selection matches in ``event``, and every place the
        event's shape cuts a path (the value there is taken whole); missing parts skipped."""
        found: list[Located] = []
        _walk(event, self._root, "", found)
        return found


def _follows(value: Any, trie: _Node) -> bool:
    """Whether the paths below ``trie`` can go on into ``value``.

    A value of another type than the next segments need (a string where they index an array,
    an object where one path wants keys and another indices) is where the event's shape cuts
    the path: it is PHI all the same, so the caller takes it whole (docs/format.md, "Shape drift").
    """
    if isinstance(value, dict):
        return not trie.items
    if isinstance(value, list):
        return not trie.keys
    return False


def _walk(node: Any, trie: _Node, prefix: str, found: list[Located]) -> None:
    # ``node`` is an object with only key children, or an array with only index children.
    if isinstance(node, dict):
        for key, spelling, child in trie.keys:
            if key in node:
                value = node[key]
                if child is not None and _follows(value, child):
                    _walk(value, child, prefix + spelling, found)
                else:
                    found.append((node, key, prefix + spelling))
    else:
        for seg, child in trie.items:
            indices = (
                range(len(node)) if isinstance(seg, Each) else (seg,) if seg < len(node) else ()
            )
            for index in indices:
                concrete = f"{prefix}[{index}]"
                value = node[index]
                if child is not None and _follows(value, child):
                    _walk(value, child, concrete, found)
                else:
                    found.append((node, index, concrete))


@functools.lru_cache(maxsize=4096)
def compile_selection(fields: tuple[str, ...]) -> Selection:
    """A policy's paths, parsed and compiled once per distinct field list (per policy version)."""
    try:
        paths = tuple(parse_selection(fields))
    except InvalidArgument as exc:
        # policysvc validates paths; if one still does not parse, encrypting "the rest" could
        # leak the field it meant, so the batch fails instead.
        raise FailedPrecondition(f"the destination's policy is unusable: {exc.message}") from None
    return Selection(paths, _build([p.segments for p in paths], 0))


def _build(group: list[tuple[Segment, ...]], depth: int) -> _Node:
    # parse_selection refuses overlaps, so no path ends where another goes on.
    children: dict[Segment, list[tuple[Segment, ...]]] = {}
    for segments in group:
        children.setdefault(segments[depth], []).append(segments)
    keys: list[tuple[str, str, _Node | None]] = []
    items: list[tuple[Each | int, _Node | None]] = []
    for seg, members in children.items():
        ends = len(members[0]) == depth + 1
        child = None if ends else _build(members, depth + 1)
        if isinstance(seg, str):
            keys.append((seg, _spelling(members[0], depth), child))
        else:
            items.append((seg, child))
    return _Node(tuple(keys), tuple(items))


def _spelling(segments: tuple[Segment, ...], depth: int) -> str:
    """How the key at ``depth`` is written after the segments before it, as FieldPath writes it."""
    before = str(FieldPath(segments[:depth]))
    return str(FieldPath(segments[: depth + 1]))[len(before) :]
