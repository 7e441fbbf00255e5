"""Scores the classifier on a labelled corpus (path, value, expected, why): per-class precision
and recall, and the three numbers the tests hold (sensitive recall, red recall, green kept)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.fieldpath import parse
from services.policysvc.classification import Classifier, FieldClassification, Signals
from services.policysvc.detectors import detect

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "classification_corpus.tsv"
CLASSES = ("red", "yellow", "green")


@dataclass(frozen=True)
class Row:
    path: str
    value: Any
    expected: str
    why: str


def load(path: Path = CORPUS) -> list[Row]:
    """The corpus rows; plain tab splitting (paths contain quotes, so no csv quoting)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.strip():
            continue
        path_text, value, expected, why = line.split("\t", 3)
        rows.append(Row(path_text, json.loads(value), expected, why))
    return rows


def held_out(row: Row) -> bool:
    """A fixed third of the rows, chosen by a hash of the path, kept aside while developing."""
    return hashlib.sha256(row.path.encode()).digest()[0] % 3 == 0


def decide(row: Row, classifier: Classifier | None = None) -> FieldClassification:
    """The classification of one row, its value seen as a sample would be."""
    path = parse(row.path)
    detections, kinds = detect([row.value])
    return (classifier or Classifier.of([])).classify(
        path, extra_signals=Signals(detections, kinds)
    )


@dataclass(frozen=True)
class Score:
    confusion: Counter[tuple[str, str]]  # (expected, got) -> count

    def precision(self, cls: str) -> float:
        got = sum(n for (_, g), n in self.confusion.items() if g == cls)
        return self.confusion[(cls, cls)] / got if got else 1.0

    def recall(self, cls: str) -> float:
        want = sum(n for (e, _), n in self.confusion.items() if e == cls)
        return self.confusion[(cls, cls)] / want if want else 1.0

    def support(self, cls: str) -> int:
        return sum(n for (e, _), n in self.confusion.items() if e == cls)

    @property
    def sensitive_recall(self) -> float:
        """Red or yellow fields found as red or yellow."""
        want = [(e, g) for (e, g), n in self.confusion.items() for _ in range(n) if e != "green"]
        return sum(g != "green" for _, g in want) / len(want) if want else 1.0


def score(rows: Iterable[Row]) -> tuple[Score, list[tuple[Row, FieldClassification]]]:
    """The score and the misses (row, what the classifier said)."""
    confusion: Counter[tuple[str, str]] = Counter()
    misses = []
    for row in rows:
        got = decide(row)
        confusion[(row.expected, got.classification.value)] += 1
        if got.classification.value != row.expected:
            misses.append((row, got))
    return Score(confusion), misses


def table(title: str, result: Score) -> str:
    """A Markdown table of precision and recall per class, then the held numbers."""
    lines = [f"{title}", "", "| class | precision | recall | fields |", "| --- | --- | --- | --- |"]
    for cls in CLASSES:
        lines.append(
            f"| {cls} | {result.precision(cls):.3f} | {result.recall(cls):.3f} "
            f"| {result.support(cls)} |"
        )
    lines.append(
        f"\nsensitive recall {result.sensitive_recall:.3f} (≥ 0.95), red recall "
        f"{result.recall('red'):.3f} (≥ 0.90), green kept green {result.recall('green'):.3f} "
        "(≥ 0.90)"
    )
    return "\n".join(lines)


def report(rows: Sequence[Row], misses_shown: int = 40) -> str:
    """All rows, the development part, the held-out part, and the misses (no values shown)."""
    parts = []
    for title, part in (
        ("all rows", rows),
        ("development rows", [r for r in rows if not held_out(r)]),
        ("held-out rows", [r for r in rows if held_out(r)]),
    ):
        result, misses = score(part)
        parts.append(table(f"### {title} ({len(part)})", result))
        if title == "all rows" and misses:
            parts.append("\nmisses (expected → got: path — decided by):")
            parts.extend(
                f"- {r.expected} → {got.classification.value}: {r.path} — {got.decided_by}"
                for r, got in misses[:misses_shown]
            )
    return "\n\n".join(parts)
