"""Every service's authorization rules, collected from the rules.py beside each servicer."""

from __future__ import annotations

from collections.abc import Mapping

from services.auditsvc.rules import RULES as AUDITSVC
from services.common.security.authz import Rule
from services.encryptsvc.rules import RULES as ENCRYPTSVC
from services.keysvc.rules import RULES as KEYSVC
from services.policysvc.rules import RULES as POLICYSVC


def collect(*tables: Mapping[str, Rule]) -> dict[str, Rule]:
    """One table from several, refusing a method that two services both claim."""
    merged: dict[str, Rule] = {}
    for table in tables:
        for method, rule in table.items():
            assert method not in merged, f"{method} has a rule in two services"
            merged[method] = rule
    return merged


# In the order of docs/security.md's table.
ALL_RULES: Mapping[str, Rule] = collect(KEYSVC, POLICYSVC, ENCRYPTSVC, AUDITSVC)
