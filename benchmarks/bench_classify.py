"""`python -m benchmarks classify`: per-class precision and recall of the default classifier on
the labelled corpora, and its cost per field (a ratio to a plain dict lookup, not a time)."""

from __future__ import annotations

import time
from pathlib import Path

from phiseal_dev import corpus

OTHER = corpus.CORPUS.parent / "classification_other_vocabulary.tsv"
THIRD = corpus.CORPUS.parent / "classification_third_vocabulary.tsv"


def _cost(rows: list[corpus.Row]) -> None:
    started = time.perf_counter()
    for _ in range(5):
        for row in rows:
            corpus.decide(row)
    per_field = (time.perf_counter() - started) / (5 * len(rows))
    table = {row.path: row.expected for row in rows}
    started = time.perf_counter()
    for _ in range(5):
        for row in rows:
            table.get(row.path)
    baseline = (time.perf_counter() - started) / (5 * len(rows))
    print(
        f"\ncost: {per_field * 1e6:.1f} µs per field (key words + detectors on its value), "
        f"{per_field / baseline:.0f}x a dict lookup"
    )


def main() -> None:
    rows = corpus.load()
    print(corpus.report(rows))
    for title, path in (("other vocabulary", OTHER), ("third vocabulary", THIRD)):
        other = corpus.load(Path(path))
        result, misses = corpus.score(other)
        print("\n" + corpus.table(f"### {title} ({len(other)})", result))
        for row, got in misses:
            print(f"- {row.expected} → {got.classification.value}: {row.path} — {got.decided_by}")
    _cost(rows)
