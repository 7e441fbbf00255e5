"""Bearer tokens for people: EdDSA (Ed25519) JWTs naming a subject and workspace memberships.

Claims: ``iss``, ``aud``, ``sub`` (the ``actor_user_id``), ``iat``, ``nbf``, ``exp`` and
``memberships`` ({workspace_id: [role, ...]}). A membership under ``"*"`` applies to every
workspace: that is how a development admin is represented, and it is only as available as
the signing key (``phiseal-token`` refuses to mint without it; verifiers can refuse it
altogether with ``PHISEAL_TOKEN_ALLOW_WILDCARD=false``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.common.errors import Unauthenticated
from services.common.security.auth import Principal, PrincipalKind, Role
from services.common.security.authz import WILDCARD

ALGORITHM = "EdDSA"
DEFAULT_ISSUER = "phiseal-dev"
DEFAULT_AUDIENCE = "phiseal"
SIGNING_KEY = "token-signing-key.pem"
PUBLIC_KEY = "token-signing.pub.pem"
DEFAULT_LEEWAY_SECONDS = 60.0
MAX_LIFETIME_SECONDS = 24 * 3600
# Far above any honest token; a bigger one is refused before it is parsed.
MAX_TOKEN_BYTES = 8192
# Verified tokens remembered per process. Only tokens that passed every check are kept, so
# filling it takes tokens signed by this deployment's key; past the bound the oldest goes.
DEFAULT_CACHE_SIZE = 4096
_MAX_SUBJECT = 200
_MAX_WORKSPACES = 1000
_REQUIRED = ["iss", "aud", "sub", "iat", "nbf", "exp"]


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    subject: str
    memberships: Mapping[str, frozenset[Role]]
    expires_at: int

    def principal(self) -> Principal:
        return Principal(
            subject=self.subject, kind=PrincipalKind.PERSON, memberships=self.memberships
        )


def _refuse(reason: str) -> Unauthenticated:
    # Never echo the token: it is a credential, and a bad one may be a good one mistyped.
    return Unauthenticated(f"bearer token refused: {reason}")


def _memberships(raw: Any, allow_wildcard: bool) -> dict[str, frozenset[Role]]:
    if not isinstance(raw, dict) or len(raw) > _MAX_WORKSPACES:
        raise _refuse('claim "memberships" must be an object {workspace_id: [roles]}')
    result: dict[str, frozenset[Role]] = {}
    for workspace, roles in raw.items():
        if not isinstance(workspace, str) or not workspace or len(workspace) > 200:
            raise _refuse('claim "memberships" has a malformed workspace id')
        if workspace == WILDCARD and not allow_wildcard:
            raise _refuse('this server does not accept "*" (all workspaces) memberships')
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _refuse('claim "memberships" must map each workspace to a list of roles')
        try:
            result[workspace] = frozenset(Role(r) for r in roles)
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise _refuse(f'claim "memberships" names an unknown role (known: {known})') from None
    return result


class TokenVerifier:
    """Checks signature (EdDSA only), issuer, audience, lifetime and claim shapes.

    A token that passed is cached until it expires: a person's client sends the same token on
    every call, and verifying an EdDSA signature and the claims costs ~100 us each time. The
    cache key is the whole token, so a hit is exactly the bytes that were verified; expiry is
    checked against the clock on every call, hit or not, so a cached token fails the moment it
    expires. (Tokens carry no revocation list: a deployment revokes by rotating the signing
    key, which means a restart with the new public key, and an empty cache.)
    """

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        max_lifetime_seconds: int = MAX_LIFETIME_SECONDS,
        allow_wildcard: bool = True,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = public_key
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds
        self._allow_wildcard = allow_wildcard
        self._cache_size = cache_size
        self._clock = clock
        self._verified: dict[str, TokenClaims] = {}  # insertion order: the oldest goes first

    @classmethod
    def from_file(cls, path: Path, **options: Any) -> TokenVerifier:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"token public key {path} is missing: run `make run` (which creates the "
                "development signing key) or set PHISEAL_TOKEN_PUBLIC_KEY"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} is not an Ed25519 public key")
        return cls(key, **options)

    @property
    def cached(self) -> int:
        """How many verified tokens are remembered."""
        return len(self._verified)

    def verify(self, token: str) -> TokenClaims:
        """The token's claims, or ``Unauthenticated`` saying what is wrong with it."""
        claims = self._verified.get(token)
        if claims is not None:
            # The test PyJWT applies to "exp": expired once now >= exp + leeway.
            if self._clock() >= claims.expires_at + self._leeway:
                del self._verified[token]
                raise _refuse("expired; mint a new one (phiseal-token)")
            return claims
        claims = self._verify(token)
        if self._cache_size > 0:
            if len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> TokenClaims:
        if len(token) > MAX_TOKEN_BYTES:
            raise _refuse(f"longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise _refuse("malformed (expected a compact JWS: header.payload.signature)") from None
        if header.get("alg") != ALGORITHM:
            # Pinned: "none", HS256 (keyed with our public key) and friends never get a say.
            raise _refuse(f"algorithm must be {ALGORITHM}")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise _refuse("expired; mint a new one (phiseal-token)") from None
        except jwt.ImmatureSignatureError:
            raise _refuse("not valid yet (nbf or iat in the future; check the clocks)") from None
        except jwt.InvalidAudienceError:
            raise _refuse(f"wrong audience; this server accepts {self._audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _refuse(f"wrong issuer; this server accepts {self._issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _refuse(f'missing claim "{exc.claim}"') from None
        except jwt.InvalidSignatureError:
            raise _refuse("bad signature (not signed by this deployment's key)") from None
        except jwt.InvalidTokenError:
            raise _refuse("malformed or invalid claims") from None
        return self._claims(claims)

    def _claims(self, claims: dict[str, Any]) -> TokenClaims:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip() or len(subject) > _MAX_SUBJECT:
            raise _refuse('claim "sub" must be a non-empty user id')
        if not subject.isprintable():
            raise _refuse('claim "sub" must be printable')
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise _refuse('claims "iat" and "exp" must be numbers')
        if exp - iat > self._max_lifetime:
            raise _refuse(f"lives longer than {self._max_lifetime} s; mint a shorter one")
        memberships = _memberships(claims.get("memberships", {}), self._allow_wildcard)
        return TokenClaims(subject=subject, memberships=memberships, expires_at=int(exp))
