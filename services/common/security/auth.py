"""Who is calling: the principal bound to each RPC, and the seam where authentication plugs in.

The interceptor asks an ``Authenticator`` for the caller before any handler runs and stores the
result in a context variable that domain code reads through ``current_principal()``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    """A person's role inside one workspace."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"
    AUDITOR = "auditor"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a person (token subject) or a service (mTLS identity)."""

    subject: str
    # "person" (token), "service" (mTLS), or "anonymous" (no credentials; open methods only).
    kind: str = "person"
    memberships: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    # Development principal with every right; only produced when auth is explicitly disabled.
    superuser: bool = False

    @property
    def actor_id(self) -> str:
        """The value written to audit records' actor_user_id."""
        return f"service:{self.subject}" if self.kind == "service" else self.subject


ANONYMOUS = Principal(subject="anonymous", superuser=True)

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "phiseal_principal", default=ANONYMOUS
)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("phiseal_request_id", default="")


def current_principal() -> Principal:
    """The caller of the RPC being served."""
    return _principal.get()


def current_request_id() -> str:
    """The request id of the RPC being served (from x-request-id, or generated)."""
    return _request_id.get()


def bind_call(principal: Principal, request_id: str) -> None:
    """Called by the interceptor once per RPC, in the handler's own context."""
    _principal.set(principal)
    _request_id.set(request_id)


class Authenticator(Protocol):
    """Identifies the caller of ``method`` from its metadata and transport peer.

    Raises ``errors.Unauthenticated`` or ``errors.PermissionDenied``.
    """

    async def authenticate(
        self, method: str, metadata: Mapping[str, str], auth_context: Mapping[str, list[bytes]]
    ) -> Principal: ...


SERVICE_HEADER = "x-phiseal-service"


class DevelopmentAuthenticator:
    """No authentication: every caller is a development superuser.

    A person is named by ``x-actor-id``; a peer service by ``x-phiseal-service`` (which
    ``services.common.server.clients`` sends). Only for a developer's loopback until mTLS and tokens
    replace it; it checks nothing.
    """

    async def authenticate(
        self, method: str, metadata: Mapping[str, str], auth_context: Mapping[str, list[bytes]]
    ) -> Principal:
        service = metadata.get(SERVICE_HEADER, "").strip()[:64]
        if service:
            return Principal(subject=service, kind="service", superuser=True)
        actor = metadata.get("x-actor-id", "").strip()[:200] or "anonymous"
        return Principal(subject=actor, superuser=True)
