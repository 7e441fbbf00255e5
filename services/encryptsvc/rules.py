"""Who may call each encryptsvc RPC: the event pipeline only."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.security.authz import Rule

_ENCRYPT = "/phiseal.encrypt.v1.EncryptService/"

# Every RPC has exactly one entry (tests/common/test_authz.py checks it). Only the client
# certificate "producer"; people are refused: encryptsvc caches no workspace to check a role
# against, and PHI has no business passing through a person's grpcurl; PreviewEncryption
# (policysvc) is their dry run.
RULES: Mapping[str, Rule] = {
    _ENCRYPT + "EncryptEvents": Rule(None, services=frozenset({"producer"}), phi=True),
}
