"""Who may call each keysvc RPC: key material and a destination's ability to decrypt."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.security.auth import Role
from services.common.security.authz import Rule

_KEYS = "/phiseal.keys.v1.KeyService/"
_ENCRYPTSVC = frozenset({"encryptsvc"})

# Every RPC has exactly one entry (tests/common/test_authz.py checks it). Reads are viewer;
# handling key material is admin.
RULES: Mapping[str, Rule] = {
    _KEYS + "GenerateKeyPair": Rule(Role.ADMIN, phi=True),
    _KEYS + "RegenerateKeyPair": Rule(Role.ADMIN, phi=True),
    _KEYS + "ConfirmKey": Rule(Role.ADMIN, phi=True),
    _KEYS + "ImportPublicKey": Rule(Role.ADMIN, phi=True),
    _KEYS + "GetPublicKey": Rule(Role.VIEWER, services=_ENCRYPTSVC),
    _KEYS + "ListKeyVersions": Rule(Role.VIEWER),
    _KEYS + "WatchKeys": Rule(Role.VIEWER, services=_ENCRYPTSVC),
}
