"""Minting development bearer tokens: the signing key pair and the ``phiseal-token`` command.

Services only verify tokens (``services.common.security.tokens``); nothing here runs in them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.security.auth import Role
from services.common.security.authz import WILDCARD
from services.common.security.tls import DEFAULT_SECRETS_DIR, write_private
from services.common.security.tokens import (
    ALGORITHM,
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    MAX_LIFETIME_SECONDS,
    PUBLIC_KEY,
    SIGNING_KEY,
)


class TokenMinter:
    """Signs tokens with the development key (tests, ``phiseal-token``, ``make run``)."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        self._key = private_key
        self._issuer = issuer
        self._audience = audience

    def mint(
        self,
        subject: str,
        memberships: Mapping[str, Sequence[Role | str]],
        *,
        ttl_seconds: int = 3600,
        now: float | None = None,
        **extra: Any,
    ) -> str:
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl_seconds,
            "memberships": {ws: sorted(str(Role(r)) for r in rs) for ws, rs in memberships.items()},
        }
        payload.update(extra)
        return jwt.encode(payload, self._key, algorithm=ALGORITHM)


@dataclass(frozen=True)
class DevSigningKey:
    """The development token key pair under the secrets folder."""

    folder: Path = DEFAULT_SECRETS_DIR

    @property
    def private_path(self) -> Path:
        return self.folder / SIGNING_KEY

    @property
    def public_path(self) -> Path:
        return self.folder / PUBLIC_KEY

    def ensure(self) -> None:
        """Creates the key pair once; an existing one is kept (tokens stay valid)."""
        if self.private_path.exists() and self.public_path.exists():
            return
        key = Ed25519PrivateKey.generate()
        write_private(
            self.private_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        write_private(
            self.public_path,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def minter(self, **options: Any) -> TokenMinter:
        try:
            key = serialization.load_pem_private_key(self.private_path.read_bytes(), None)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no development signing key at {self.private_path}: run `make run` first "
                "(it creates one), or pass --secrets-dir"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{self.private_path} is not an Ed25519 private key")
        return TokenMinter(key, **options)


def parse_membership(text: str) -> tuple[str, Role]:
    """``ws_1=admin`` → ("ws_1", Role.ADMIN)."""
    workspace, sep, role = text.partition("=")
    if not sep or not workspace.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: use WORKSPACE=ROLE, e.g. ws_1=admin")
    try:
        return workspace.strip(), Role(role.strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise argparse.ArgumentTypeError(f"{text!r}: role must be one of {known}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``phiseal-token``: prints a development bearer token."""
    parser = argparse.ArgumentParser(
        prog="phiseal-token", description="Mint a development bearer token for PHIseal."
    )
    parser.add_argument("--sub", default="dev-admin", help="actor_user_id (default dev-admin)")
    parser.add_argument(
        "--workspace",
        action="append",
        type=parse_membership,
        default=[],
        metavar="WS=ROLE",
        help="a membership, repeatable: --workspace ws_1=admin --workspace ws_2=viewer",
    )
    parser.add_argument(
        "--admin", action="store_true", help='admin and auditor in every workspace ("*")'
    )
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER)
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE)
    parser.add_argument("--secrets-dir", type=Path, default=DEFAULT_SECRETS_DIR)
    args = parser.parse_args(argv)
    if not 0 < args.ttl <= MAX_LIFETIME_SECONDS:
        parser.error(f"--ttl must be 1..{MAX_LIFETIME_SECONDS}")
    memberships: dict[str, set[Role]] = {}
    for workspace, role in args.workspace:
        memberships.setdefault(workspace, set()).add(role)
    if args.admin:
        memberships.setdefault(WILDCARD, set()).update({Role.ADMIN, Role.AUDITOR})
    if not memberships:
        parser.error("name at least one --workspace WS=ROLE, or --admin")
    try:
        minter = DevSigningKey(args.secrets_dir).minter(issuer=args.issuer, audience=args.audience)
    except (FileNotFoundError, ValueError) as exc:
        print(f"phiseal-token: {exc}", file=sys.stderr)
        return 2
    print(
        minter.mint(
            args.sub, {ws: sorted(rs) for ws, rs in memberships.items()}, ttl_seconds=args.ttl
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
