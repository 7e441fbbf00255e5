"""The checkpoint journal: every checkpoint and alarm, appended and fsynced outside PostgreSQL.

One JSON object per line (``{"type": "checkpoint", ...}`` or ``{"type": "alarm", ...}``). The
file is only ever appended to, each write is fsynced before the checkpoint's transaction
commits, and it is meant to be shipped to write-once storage (docs/audit-guarantees.md): the
verifiers compare it with the database, so checkpoints deleted or rewritten together with the
records they cover are found even by someone who controls PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from services.auditsvc import chain


class JournalError(Exception):
    """The journal cannot be read; the message names the file and line."""


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """Every line of the journal as an object (nothing when the file does not exist yet)."""
    try:
        lines = path.open("rb")
    except FileNotFoundError:
        return
    with lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                if not isinstance(item, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise JournalError(f"{path}:{number}: {exc}") from None
            yield item


def read_checkpoints(path: Path, workspace_id: str | None = None) -> list[chain.Checkpoint]:
    """The journal's checkpoints (of one workspace, or all), in file order."""
    out: list[chain.Checkpoint] = []
    for number, item in enumerate(read_entries(path), 1):
        if item.get("type") != "checkpoint":
            continue
        if workspace_id is not None and item.get("workspace_id") != workspace_id:
            continue
        try:
            out.append(chain.Checkpoint.from_json(item))
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalError(f"{path}: checkpoint entry {number}: {exc}") from None
    return out


class Journal:
    """The service's own journal file (AUDITSVC_JOURNAL_FILE). Blocking: call from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Appends ``entries`` and fsyncs; returns only once they are on disk."""
        if not entries:
            return
        data = b"".join(orjson.dumps(dict(e)) + b"\n" for e in entries)
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            # The new directory entry must survive a crash too.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def checkpoints(self, workspace_id: str | None = None) -> list[chain.Checkpoint]:
        return read_checkpoints(self.path, workspace_id)

    def latest(self) -> dict[str, chain.Checkpoint]:
        """The newest checkpoint of each workspace this journal holds."""
        newest: dict[str, chain.Checkpoint] = {}
        for cp in self.checkpoints():
            if cp.workspace_id not in newest or cp.number > newest[cp.workspace_id].number:
                newest[cp.workspace_id] = cp
        return newest
