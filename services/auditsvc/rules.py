"""Who may call each auditsvc RPC: keysvc and policysvc write; auditors read."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.security.auth import Role
from services.common.security.authz import Rule

_AUDIT = "/phiseal.audit.v1.AuditService/"

# Every RPC has exactly one entry (tests/common/test_authz.py checks it). Only keysvc and
# policysvc write; people read with auditor (or admin).
RULES: Mapping[str, Rule] = {
    _AUDIT + "RecordEvents": Rule(None, services=frozenset({"keysvc", "policysvc"})),
    _AUDIT + "QueryEvents": Rule(Role.AUDITOR, phi=True),
    _AUDIT + "ExportEvents": Rule(Role.AUDITOR, phi=True),
    _AUDIT + "VerifyChain": Rule(Role.AUDITOR),
}
