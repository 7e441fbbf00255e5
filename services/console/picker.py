"""The field picker: which fields a destination's policy may name, and why the others may not.

Only yellow fields under ``context``, ``traits`` and ``properties`` are selectable; every other
field is listed with its class, what decided it and a link to reclassify it.
"""

from __future__ import annotations

from dataclasses import dataclass

from phiseal.policy.v1 import policy_pb2

from services.console.labels import CLASSES, SOURCES, label

SECTIONS = ("context", "traits", "properties")


@dataclass(frozen=True)
class PickerRow:
    path: str
    klass: str  # red / yellow / green
    why: str
    selectable: bool
    selected: bool
    how_to_change: str = ""


def in_sections(path: str) -> bool:
    head = path.split(".", 1)[0].split("[", 1)[0]
    return head in SECTIONS and "." in path


def rows(listing: policy_pb2.ListSelectableFieldsResponse) -> list[PickerRow]:
    """One row per field under the three sections, sorted by path: policysvc's answer to
    ListSelectableFields (selectable = yellow; the others with what decided and the fix)."""
    found: list[PickerRow] = []
    for choice in listing.selectable:
        f = choice.field
        found.append(_row(f, selectable=True, selected=choice.encrypted))
    for other in listing.not_selectable:
        found.append(_row(other.field, False, False, other.how_to_change))
    return sorted((r for r in found if in_sections(r.path)), key=lambda r: r.path)


def _row(
    f: policy_pb2.FieldClassification, selectable: bool, selected: bool, how: str = ""
) -> PickerRow:
    return PickerRow(
        path=f.path,
        klass=label(CLASSES, f.classification),
        why=f.decided_by or label(SOURCES, f.source),
        selectable=selectable,
        selected=selected,
        how_to_change=how,
    )
