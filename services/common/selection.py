"""Field paths compiled once into a trie, located in an event in one walk.

``fieldpath.find`` walks the event once per path and spells every key of every match with a
regex: P paths over an event cost P walks. Here the paths share one walk, and each key's
spelling is worked out when the trie is built. The result is the same set of places
``fieldpath.sealed_places`` gives for each path, the places where the event's shape cuts a path
included (tests/encryptsvc/test_selection.py). encryptsvc locates a policy's fields with it on
the hot path; policysvc's PreviewEncryption shows the same places.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.fieldpath import Each, FieldPath, Segment

try:  # built from _fastwalk.c when the machine can compile it (pyproject.toml, ext-modules)
    from services.common import _fastwalk
except ImportError:  # pragma: no cover - exercised on machines without a C compiler
    _fastwalk = None  # type: ignore[assignment]

# How ``locate`` walks by default: "native" (C, _fastwalk) or "python". Logged at startup.
WALKING = "python" if _fastwalk is None else "native"

_ABSENT = object()  # a key the event does not have (a value may be None)

# container[key] holds a named value; concrete is its path with [*] resolved to indices.
Located = tuple[dict[str, Any] | list[Any], str | int, str]


@dataclass(frozen=True)
class _Node:
    """Children of one point in the trie; a child that is a number means "the value here is
    selected, by path number n"."""

    keys: tuple[tuple[str, str, _Node | int], ...]  # (key, its spelling, child)
    items: tuple[tuple[Each | int, _Node | int], ...]  # ([*] or an index, child)
    order: dict[str, int]  # key -> its position in keys
    numbers: tuple[int, ...]  # every path number at or below this point
    # For the hot path (_locate): each key child as (key, spelling, child, goes_on), goes_on
    # being the container type the paths below continue into (dict or list), or None where a
    # path ends there or where the paths below want both (the value is then taken whole).
    steps: tuple[tuple[str, str, _Node | int, type | None], ...] = ()


@dataclass(frozen=True)
class Selection:
    """The compiled form of one policy's field list."""

    paths: tuple[FieldPath, ...]
    _root: _Node
    # The trie as _fastwalk.locate reads it (None: locate walks in Python).
    _native: Any = field(default=None, compare=False, repr=False)

    def locate(self, event: dict[str, Any]) -> list[Located]:
        """Every place a path of this selection matches in ``event``, and every place the
        event's shape cuts a path (the value there is taken whole); missing parts skipped."""
        if self._native is not None:
            # The same walk in C: the same places in the same order (2.5 -> 0.4 us per event).
            return _fastwalk.locate(event, self._native)
        found: list[Located] = []
        _locate(event, self._root, "", found)
        return found

    def locate_paths(self, event: dict[str, Any]) -> list[tuple[FieldPath, str]]:
        """Each match as (a path of this selection, the concrete place); a place where the
        event's shape cuts several paths comes once for each of them."""
        found: list[Located] = []
        which: list[tuple[int, ...]] = []
        _walk(event, self._root, "", found, which)
        return [
            (self.paths[n], concrete)
            for numbers, (_, _, concrete) in zip(which, found, strict=True)
            for n in numbers
        ]


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


def _walk(
    node: Any, trie: _Node, prefix: str, found: list[Located], which: list[tuple[int, ...]] | None
) -> None:
    # ``node`` is an object with only key children, or an array with only index children.
    if isinstance(node, dict):
        if len(node) < len(trie.keys):
            # Look up the event's keys instead: a wide trie over many small objects would
            # otherwise cost trie width per object. Either way, found in the trie's key order.
            pairs = [trie.keys[i] for i in sorted(trie.order[k] for k in node if k in trie.order)]
        else:
            pairs = [entry for entry in trie.keys if entry[0] in node]
        for key, spelling, child in pairs:
            value = node[key]
            if isinstance(child, int) or not _follows(value, child):
                found.append((node, key, prefix + spelling))
                if which is not None:
                    which.append((child,) if isinstance(child, int) else child.numbers)
            else:
                _walk(value, child, prefix + spelling, found, which)
    elif isinstance(node, list):
        for seg, child in trie.items:
            indices = (
                range(len(node)) if isinstance(seg, Each) else (seg,) if seg < len(node) else ()
            )
            for index in indices:
                concrete = f"{prefix}[{index}]"
                value = node[index]
                if isinstance(child, int) or not _follows(value, child):
                    found.append((node, index, concrete))
                    if which is not None:
                        which.append((child,) if isinstance(child, int) else child.numbers)
                else:
                    _walk(value, child, concrete, found, which)


def _locate(node: Any, trie: _Node, prefix: str, found: list[Located]) -> None:
    """_walk for ``locate`` (encryptsvc's hot path): the same places in the same order, with
    each child's continuation decided when the trie was built rather than per value."""
    if isinstance(node, dict):
        steps = trie.steps
        if len(node) < len(steps):
            order = trie.order
            steps = tuple(steps[i] for i in sorted(order[k] for k in node if k in order))
        for key, spelling, child, goes_on in steps:
            value = node.get(key, _ABSENT)
            if value is _ABSENT:
                continue
            if goes_on is not None and isinstance(value, goes_on):
                _locate(value, child, prefix + spelling, found)  # type: ignore[arg-type]
            else:
                found.append((node, key, prefix + spelling))
    elif isinstance(node, list):
        for seg, child in trie.items:
            indices = (
                range(len(node)) if isinstance(seg, Each) else (seg,) if seg < len(node) else ()
            )
            for index in indices:
                value = node[index]
                if isinstance(child, int) or not _follows(value, child):
                    found.append((node, index, f"{prefix}[{index}]"))
                else:
                    _locate(value, child, f"{prefix}[{index}]", found)


def _goes_on(child: _Node | int) -> type | None:
    if isinstance(child, int):
        return None
    if not child.items:
        return dict
    if not child.keys:
        return list
    return None


def build_selection(paths: Sequence[FieldPath], *, native: bool | None = None) -> Selection:
    """The trie of ``paths``, which must come from ``parse_selection`` (no overlaps). ``native``
    (default: whenever _fastwalk is built) has ``locate`` walk in C."""
    root = _build([(p.segments, n) for n, p in enumerate(paths)], 0)
    if native is None:
        native = _fastwalk is not None
    if native and _fastwalk is None:
        raise ValueError("the native walk is not built on this machine")
    return Selection(tuple(paths), root, _native_trie(root) if native else None)


def _native_trie(node: _Node | int) -> Any:
    """``node`` as the tuples _fastwalk.locate reads (the layout is described in _fastwalk.c)."""
    if isinstance(node, int):
        return node
    return (
        tuple(
            (
                key,
                spelling,
                _native_trie(child),
                0 if goes_on is None else 1 if goes_on is dict else 2,
            )
            for key, spelling, child, goes_on in node.steps
        ),
        tuple(
            (
                -1 if isinstance(seg, Each) else seg,
                _native_trie(child),
                not isinstance(child, int) and not child.items,
                not isinstance(child, int) and not child.keys,
            )
            for seg, child in node.items
        ),
        dict(node.order),
    )


def _build(group: list[tuple[tuple[Segment, ...], int]], depth: int) -> _Node:
    # parse_selection refuses overlaps, so no path ends where another goes on.
    children: dict[Segment, list[tuple[tuple[Segment, ...], int]]] = {}
    for member in group:
        children.setdefault(member[0][depth], []).append(member)
    keys: list[tuple[str, str, _Node | int]] = []
    items: list[tuple[Each | int, _Node | int]] = []
    for seg, members in children.items():
        segments, number = members[0]
        ends = len(segments) == depth + 1
        child = number if ends else _build(members, depth + 1)
        if isinstance(seg, str):
            keys.append((seg, _spelling(segments, depth), child))
        else:
            items.append((seg, child))
    return _Node(
        tuple(keys),
        tuple(items),
        {key: i for i, (key, _, _) in enumerate(keys)},
        tuple(sorted(number for _, number in group)),
        tuple((key, spelling, child, _goes_on(child)) for key, spelling, child in keys),
    )


def _spelling(segments: tuple[Segment, ...], depth: int) -> str:
    """How the key at ``depth`` is written after the segments before it, as FieldPath writes it."""
    before = str(FieldPath(segments[:depth]))
    return str(FieldPath(segments[: depth + 1]))[len(before) :]
