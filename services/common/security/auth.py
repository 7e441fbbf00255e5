"""Who is calling: the ``Caller`` of each RPC, and the seam where authentication plugs in.

The interceptor asks an ``Authenticator`` for the principal before any handler runs and binds
a ``Caller`` (principal + request id) to the call. The servicer reads it once with
``current_caller()`` and passes it to every domain call; domain code never reads a context
variable. Nothing has rights by default: outside a bound call ``current_caller()`` raises.
"""

from __future__ import annotations

import contextvars
import uuid
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


class PrincipalKind(StrEnum):
    """How a principal was identified."""

    PERSON = "person"  # a bearer token's subject
    SERVICE = "service"  # a verified client certificate (mTLS), or PHIseal acting on its own
    ANONYMOUS = "anonymous"  # no credentials: open methods (health, reflection) only


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a person (token subject) or a service (mTLS identity)."""

    subject: str
    kind: PrincipalKind = PrincipalKind.PERSON
    memberships: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    # Development principal with every right; only produced when auth is explicitly disabled.
    superuser: bool = False

    @property
    def actor_id(self) -> str:
        """The value written to audit records' actor_user_id."""
        return f"service:{self.subject}" if self.kind is PrincipalKind.SERVICE else self.subject


# Not a superuser and a member of nothing: may call open methods (health, reflection) only.
ANONYMOUS = Principal(subject="anonymous", kind=PrincipalKind.ANONYMOUS)


@dataclass(frozen=True)
class Caller:
    """Who is calling and in which request: what every domain action is given explicitly."""

    principal: Principal
    request_id: str

    @property
    def actor_id(self) -> str:
        return self.principal.actor_id

    @classmethod
    def system(cls, name: str) -> Caller:
        """PHIseal acting on its own (a sweeper, a scheduled job), named in its audit records
        as ``service:<name>``; each call gets a fresh request id that ties its records together."""
        return cls(Principal(subject=name, kind=PrincipalKind.SERVICE), uuid.uuid4().hex)


class NoCallerError(RuntimeError):
    """``current_caller()`` outside an RPC bound by the interceptor: a bug, never a default."""


# No default: an unbound context has no caller, and so no rights (it raises, it does not grant).
_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("phiseal_caller")


def current_caller() -> Caller:
    """The caller of the RPC being served; for servicers, which pass it on to the domain.

    Raises ``NoCallerError`` outside an RPC served through the interceptor.
    """
    try:
        return _caller.get()
    except LookupError:
        raise NoCallerError(
            "no caller is bound: current_caller() is only valid while the interceptor serves "
            "an RPC; code outside one passes a Caller explicitly (e.g. Caller.system(name))"
        ) from None


def bind_caller(caller: Caller) -> None:
    """Called by the interceptor once per RPC, in the handler's own context."""
    _caller.set(caller)


class Authenticator(Protocol):
    """Identifies the caller of ``method`` from its metadata and transport peer.

    Raises ``errors.Unauthenticated`` or ``errors.PermissionDenied``.
    """

    async def authenticate(
        self, method: str, metadata: Mapping[str, str], auth_context: Mapping[str, list[bytes]]
    ) -> Principal: ...


SERVICE_HEADER = "x-phiseal-service"


class DevelopmentAuthenticator:
    """No authentication: every caller is a development superuser, explicitly so.

    A person is named by ``x-actor-id``; a peer service by ``x-phiseal-service`` (which
    ``services.common.server.clients`` sends). Only for a developer's loopback until mTLS and tokens
    replace it; it checks nothing.
    """

    async def authenticate(
        self, method: str, metadata: Mapping[str, str], auth_context: Mapping[str, list[bytes]]
    ) -> Principal:
        service = metadata.get(SERVICE_HEADER, "").strip()[:64]
        if service:
            return Principal(subject=service, kind=PrincipalKind.SERVICE, superuser=True)
        actor = metadata.get("x-actor-id", "").strip()[:200] or "anonymous"
        return Principal(subject=actor, kind=PrincipalKind.PERSON, superuser=True)
