"""Bearer tokens: what a verifier accepts, what it refuses and how it says so; phiseal-token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phiseal_dev.tokens import DevSigningKey, TokenMinter, main
from services.common.errors import Unauthenticated
from services.common.security.auth import Role
from services.common.security.tokens import TokenVerifier
from tests.common.secure import public_pem

KEY = Ed25519PrivateKey.generate()
MINTER = TokenMinter(KEY)
VERIFIER = TokenVerifier(KEY.public_key())


def refusal(token: str, verifier: TokenVerifier = VERIFIER) -> str:
    """The verifier's message for a token it must refuse."""
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    return caught.value.message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_token_gives_subject_and_memberships() -> None:
    """A good token becomes a person principal with its workspace roles."""
    token = MINTER.mint("alice", {"ws_1": [Role.ADMIN], "ws_2": ["viewer"]})
    principal = VERIFIER.verify(token).principal()
    assert (principal.subject, principal.kind, dict(principal.memberships)) == (
        "alice",
        "person",
        {"ws_1": frozenset({Role.ADMIN}), "ws_2": frozenset({Role.VIEWER})},
    )


def test_malformed_token_is_refused_without_echo() -> None:
    """Garbage is refused with a message that does not repeat it."""
    message = refusal("not-a-jwt-SECRETVALUE")
    assert (message.startswith("bearer token refused: malformed"), "SECRETVALUE" in message) == (
        True,
        False,
    )


def test_token_signed_by_another_key_is_refused() -> None:
    """A token from any other key has a bad signature."""
    token = TokenMinter(Ed25519PrivateKey.generate()).mint("alice", {"*": ["admin"]})
    assert "bad signature" in refusal(token)


def test_expired_token_is_refused() -> None:
    """Expired beyond the clock-skew leeway: refused, with the fix."""
    token = MINTER.mint("alice", {"ws_1": ["viewer"]}, ttl_seconds=60, now=time.time() - 200)
    assert refusal(token) == "bearer token refused: expired; mint a new one (phiseal-token)"


def test_token_expired_within_leeway_is_accepted() -> None:
    """A token a few seconds past exp still passes: clocks drift by up to 60 s."""
    token = MINTER.mint("alice", {"ws_1": ["viewer"]}, ttl_seconds=60, now=time.time() - 90)
    assert VERIFIER.verify(token).subject == "alice"


def test_token_from_the_future_is_refused() -> None:
    """nbf/iat beyond the leeway: not valid yet."""
    token = MINTER.mint("alice", {"ws_1": ["viewer"]}, now=time.time() + 600)
    assert "not valid yet" in refusal(token)


def test_wrong_audience_is_refused() -> None:
    token = TokenMinter(KEY, audience="someone-else").mint("alice", {"ws_1": ["viewer"]})
    assert refusal(token) == "bearer token refused: wrong audience; this server accepts 'phiseal'"


def test_wrong_issuer_is_refused() -> None:
    token = TokenMinter(KEY, issuer="evil").mint("alice", {"ws_1": ["viewer"]})
    assert refusal(token) == "bearer token refused: wrong issuer; this server accepts 'phiseal-dev'"


def test_alg_none_is_refused() -> None:
    """An unsigned token (alg none) never passes."""
    now = int(time.time())
    claims = {"iss": "phiseal-dev", "aud": "phiseal", "sub": "x", "iat": now, "nbf": now}
    claims["exp"] = now + 60
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{_b64(json.dumps(claims).encode())}."
    assert refusal(token) == "bearer token refused: algorithm must be EdDSA"


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    """The classic algorithm-confusion attack: HMAC keyed with our public key."""
    now = int(time.time())
    claims = {"iss": "phiseal-dev", "aud": "phiseal", "sub": "x", "iat": now, "nbf": now}
    claims["exp"] = now + 60
    signing_input = (
        f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
        f"{_b64(json.dumps(claims).encode())}"
    )
    mac = hmac.new(public_pem(KEY), signing_input.encode(), hashlib.sha256).digest()
    assert (
        refusal(f"{signing_input}.{_b64(mac)}") == "bearer token refused: algorithm must be EdDSA"
    )


def test_missing_expiry_is_refused() -> None:
    """exp is required: a token without it would live forever."""
    now = int(time.time())
    payload = {"iss": "phiseal-dev", "aud": "phiseal", "sub": "x", "iat": now, "nbf": now}
    token = jwt.encode(payload, KEY, algorithm="EdDSA")
    assert refusal(token) == 'bearer token refused: missing claim "exp"'


def test_unknown_role_is_refused() -> None:
    """A role this server does not know is an error, not silently ignored."""
    now = int(time.time())
    payload = {"iss": "phiseal-dev", "aud": "phiseal", "sub": "x", "iat": now, "nbf": now}
    payload |= {"exp": now + 60, "memberships": {"ws_1": ["owner"]}}
    token = jwt.encode(payload, KEY, algorithm="EdDSA")
    assert "unknown role" in refusal(token)


def test_overlong_lifetime_is_refused() -> None:
    """Tokens live at most 24 h."""
    token = MINTER.mint("alice", {"ws_1": ["viewer"]}, ttl_seconds=3 * 24 * 3600)
    assert "lives longer than" in refusal(token)


def test_wildcard_refused_when_disallowed() -> None:
    """A deployment can refuse "*" memberships outright."""
    strict = TokenVerifier(KEY.public_key(), allow_wildcard=False)
    token = MINTER.mint("root", {"*": ["admin"]})
    assert '"*"' in refusal(token, strict)


def test_oversized_token_is_refused_before_parsing() -> None:
    assert "longer than" in refusal("a" * 10_000)


def test_cli_mints_a_token_the_services_accept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """phiseal-token --workspace ws_1=admin --workspace ws_2=viewer."""
    key = DevSigningKey(tmp_path)
    key.ensure()
    argv = ["--secrets-dir", str(tmp_path), "--sub", "bob", "--workspace", "ws_1=admin"]
    assert main([*argv, "--workspace", "ws_2=viewer"]) == 0
    verifier = TokenVerifier.from_file(key.public_path)
    claims = verifier.verify(capsys.readouterr().out.strip())
    assert (claims.subject, dict(claims.memberships)) == (
        "bob",
        {"ws_1": frozenset({Role.ADMIN}), "ws_2": frozenset({Role.VIEWER})},
    )


def test_cli_admin_token_is_admin_and_auditor_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--admin is represented as a "*" membership."""
    key = DevSigningKey(tmp_path)
    key.ensure()
    assert main(["--secrets-dir", str(tmp_path), "--admin"]) == 0
    claims = TokenVerifier.from_file(key.public_path).verify(capsys.readouterr().out.strip())
    assert dict(claims.memberships) == {"*": frozenset({Role.ADMIN, Role.AUDITOR})}


def test_cli_refuses_without_the_signing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No development key, no token (and no key is created on the fly)."""
    code = main(["--secrets-dir", str(tmp_path), "--admin"])
    assert (code, capsys.readouterr().out, list(tmp_path.iterdir())) == (2, "", [])


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_token_is_verified_once_then_served_from_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second call with the same token checks no signature: the cache answers."""
    verifier = TokenVerifier(KEY.public_key())
    token = MINTER.mint("alice", {"ws_1": [Role.EDITOR]})
    decodes = []
    real_decode = jwt.decode

    def counting_decode(*args: object, **kwargs: object) -> object:
        decodes.append(1)
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    first, second = verifier.verify(token), verifier.verify(token)
    assert (first, second, len(decodes)) == (second, first, 1)


def test_a_cached_token_fails_once_it_expires() -> None:
    """Expiry is checked on every call: a cached token is refused once exp + leeway passed."""
    clock = _Clock()
    verifier = TokenVerifier(KEY.public_key(), leeway_seconds=5, clock=clock)
    token = MINTER.mint("alice", {"ws_1": [Role.EDITOR]}, ttl_seconds=60)
    verifier.verify(token)
    clock.now += 60 + 5 + 1
    assert (
        refusal(token, verifier) == "bearer token refused: expired; mint a new one (phiseal-token)"
    )
    assert verifier.cached == 0


def test_refused_tokens_are_never_cached_and_the_cache_is_bounded() -> None:
    """Only verified tokens are remembered, at most cache_size of them (the oldest goes)."""
    verifier = TokenVerifier(KEY.public_key(), cache_size=2)
    bad = TokenMinter(Ed25519PrivateKey.generate()).mint("mallory", {"ws_1": ["admin"]})
    refusal(bad, verifier)
    tokens = [MINTER.mint(f"user-{i}", {"ws_1": [Role.VIEWER]}) for i in range(3)]
    for token in tokens:
        verifier.verify(token)
    assert verifier.cached == 2
    assert refusal(bad, verifier).startswith("bearer token refused: bad signature")
