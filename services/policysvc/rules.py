"""Who may call each policysvc RPC: workspaces, destinations, classification and policies."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.security.auth import Role
from services.common.security.authz import Rule

_POLICY = "/phiseal.policy.v1.PolicyService/"
_ENCRYPTSVC = frozenset({"encryptsvc"})

# Every RPC has exactly one entry (tests/common/test_authz.py checks it). Reads are viewer;
# changes that widen protection or configure are editor; changes that weaken protection or
# govern HIPAA eligibility are admin.
RULES: Mapping[str, Rule] = {
    _POLICY + "CreateWorkspace": Rule(Role.ADMIN, platform=True),
    _POLICY + "GetWorkspace": Rule(Role.VIEWER),
    _POLICY + "SetHipaaEligibility": Rule(Role.ADMIN, phi=True),
    _POLICY + "CreateDestination": Rule(Role.EDITOR),
    _POLICY + "GetDestination": Rule(Role.VIEWER, services=frozenset({"keysvc"})),
    _POLICY + "ListDestinations": Rule(Role.VIEWER),
    _POLICY + "ListClassifications": Rule(Role.VIEWER),
    _POLICY + "SetClassification": Rule(Role.EDITOR, phi=True),
    _POLICY + "GetPolicy": Rule(Role.VIEWER, services=_ENCRYPTSVC),
    _POLICY + "EnableEncryption": Rule(Role.EDITOR, phi=True),
    _POLICY + "UpdateEncryptedFields": Rule(Role.EDITOR, phi=True),
    _POLICY + "DisableEncryption": Rule(Role.ADMIN, phi=True),
    _POLICY + "ListPolicyVersions": Rule(Role.VIEWER),
    _POLICY + "ListSelectableFields": Rule(Role.VIEWER, phi=True),
    _POLICY + "PreviewEncryption": Rule(Role.EDITOR, phi=True),
    _POLICY + "WatchPolicies": Rule(Role.VIEWER, services=_ENCRYPTSVC),
}
