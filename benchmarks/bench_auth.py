"""Per-call cost of authentication and authorization, against a baseline of no check at all."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phiseal_dev.tokens import TokenMinter
from services.common.security.auth import Role
from services.common.security.authz import Access, require
from services.common.security.tokens import TokenVerifier
from services.policysvc.rules import RULES

ROUNDS = 2000


def _median_us(fn: Callable[[], object]) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def main() -> None:
    key = Ed25519PrivateKey.generate()
    token = TokenMinter(key).mint("alice", {"ws_1": [Role.EDITOR], "ws_2": [Role.VIEWER]})
    verifier = TokenVerifier(key.public_key())
    uncached = TokenVerifier(key.public_key(), cache_size=0)
    principal = verifier.verify(token).principal()
    access = Access(rules=RULES)
    method = "/phiseal.policy.v1.PolicyService/UpdateEncryptedFields"
    baseline = _median_us(lambda: None)
    verify = _median_us(lambda: uncached.verify(token))
    cached = _median_us(lambda: verifier.verify(token))
    gate = _median_us(lambda: access.check_method(principal, method))
    req = _median_us(lambda: require(principal, "ws_1", Role.EDITOR))
    print(f"baseline (empty call)  median {baseline:8.2f} us")
    print(f"token verify (EdDSA)   median {verify:8.2f} us")
    print(f"token verify (cached)  median {cached:8.2f} us  ({verify / max(cached, 1e-9):.0f}x)")
    print(f"check_method           median {gate:8.2f} us")
    print(f"require                median {req:8.2f} us")
    print(f"verify / gate ratio    {verify / max(gate, 1e-9):8.1f}x")
