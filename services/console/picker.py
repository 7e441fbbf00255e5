"""The field picker: which fields a destination's policy may name, and why the others may not.

Only yellow fields under ``context``, ``traits`` and ``properties`` are selectable; every other
field is listed with its class, what decided it and a link to reclassify it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from phiseal.policy.v1 import policy_pb2

from services.console.labels import CLASSES, SOURCES, label

SECTIONS = ("context", "traits", "properties")


@dataclass(frozen=True)
class PickerRow:
    path: str
    klass: str  # red / yellow / green / unknown
    why: str
    selectable: bool
    selected: bool


def in_sections(path: str) -> bool:
    head = path.split(".", 1)[0].split("[", 1)[0]
    return head in SECTIONS and "." in path


def rows(
    fields: Iterable[policy_pb2.FieldClassification], policy_fields: Sequence[str]
) -> list[PickerRow]:
    """One row per known field under the three sections, sorted by path; fields the policy
    names are marked selected (even if since reclassified, so the person sees them)."""
    chosen = set(policy_fields)
    found: dict[str, PickerRow] = {}
    for f in fields:
        if not in_sections(f.path):
            continue
        klass = label(CLASSES, f.classification)
        source = label(SOURCES, f.source)
        found[f.path] = PickerRow(
            path=f.path,
            klass=klass,
            why=f.decided_by or source,
            selectable=klass == "yellow",
            selected=f.path in chosen,
        )
    for path in chosen - found.keys():
        found[path] = PickerRow(path, "unknown", "named by the policy", True, True)
    return [found[p] for p in sorted(found)]
