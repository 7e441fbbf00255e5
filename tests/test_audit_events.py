"""docs/audit-events.md lists every RPC of the four services with its event type or why none,
and every event type the services write."""

from __future__ import annotations

import re
from pathlib import Path

from phiseal.audit.v1 import audit_pb2
from phiseal.encrypt.v1 import encrypt_pb2
from phiseal.keys.v1 import keys_pb2
from phiseal.policy.v1 import policy_pb2

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "audit-events.md").read_text()


def _rows(heading: str) -> dict[str, str]:
    section = DOC.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {r[0].strip("| `"): r[1].strip(" |") for r in rows[2:]}


def _rpcs() -> set[str]:
    return {
        f"{service.full_name}/{method.name}"
        for module in (policy_pb2, keys_pb2, encrypt_pb2, audit_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_every_rpc_has_its_event_type_or_a_reason() -> None:
    """Each RPC of the four services has a row: an event type listed above, or 'none: why'."""
    rows = _rows("Every RPC")
    types = set(_rows("Event types"))
    unexplained = {
        rpc
        for rpc, said in rows.items()
        if not said.startswith("none") and not any(t in said for t in types)
    }
    assert (sorted(_rpcs() - set(rows)), sorted(unexplained)) == ([], [])


def test_every_event_type_written_is_documented() -> None:
    """Every event type literal in the services' code has a row in the event-type table."""
    written: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        text = path.read_text()
        written |= set(
            re.findall(r'"((?:[A-Z][A-Za-z]*|HIPAA) (?:[A-Z][A-Za-z]* ?)+(?:ed|Viewed))"', text)
        )
    documented = set(_rows("Event types"))
    assert sorted(t for t in written if t not in documented and " " in t) == []
