"""The authorization model: what a rule says, and the checks that enforce the rules.

Each service declares its own rules beside its servicer (``services/<name>/rules.py``, one
``Rule`` per RPC) and its composition root hands them to the server; this module names no
service's RPCs. Two steps. The interceptor knows the method and the caller:
``Access.check_method`` refuses a service outside its allow-list, a person calling a
service-only method, or a person who holds the needed role in no workspace at all. The domain
knows the workspace (often only after a lookup): it calls
``require(caller.principal, workspace_id, Role.X)``. A denied attempt on a method marked
``phi`` is handed to a ``DenialAuditor`` so it lands in the audit log.

Roles: viewer < editor < admin is a ladder; auditor stands apart and only reads the audit
log, which admins may read too. A membership under ``"*"`` counts in every workspace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from services.common.errors import PermissionDenied
from services.common.security.auth import Caller, Principal, PrincipalKind, Role

# A membership under this workspace id counts in every workspace (tokens.py reads it from JWTs).
WILDCARD = "*"

_LADDER = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}

log = structlog.get_logger("authz")


def satisfies(held: Role, needed: Role) -> bool:
    """Whether holding ``held`` is enough for something that needs ``needed``."""
    if needed is Role.AUDITOR:
        return held in (Role.AUDITOR, Role.ADMIN)
    return held in _LADDER and _LADDER[held] >= _LADDER[needed]


def roles_in(principal: Principal, workspace_id: str) -> frozenset[Role]:
    """The roles ``principal`` holds in ``workspace_id`` (its own plus any ``"*"`` roles)."""
    own = principal.memberships.get(workspace_id, frozenset())
    return frozenset(own) | frozenset(principal.memberships.get(WILDCARD, frozenset()))


def allowed(principal: Principal, workspace_id: str, role: Role) -> bool:
    """Whether ``principal`` may do what needs ``role`` inside ``workspace_id``.

    Services pass: their allow-list was checked per method by the interceptor, and they act
    on behalf of every workspace.
    """
    if principal.superuser or principal.kind is PrincipalKind.SERVICE:
        return True
    return any(satisfies(held, role) for held in roles_in(principal, workspace_id))


class AccessDenied(PermissionDenied):
    """A person lacks the role a workspace action needs; names what would be enough."""

    def __init__(self, message: str, *, workspace_id: str = "", needed: Role | None = None):
        super().__init__(message)
        self.workspace_id = workspace_id
        self.needed = needed


def require(principal: Principal, workspace_id: str, role: Role) -> None:
    """Raises ``AccessDenied`` unless ``principal`` holds ``role`` (or better) in the workspace."""
    if allowed(principal, workspace_id, role):
        return
    held = sorted(r.value for r in roles_in(principal, workspace_id))
    has = f"you hold {', '.join(held)} there" if held else "you are not a member of it"
    enough = "auditor or admin" if role is Role.AUDITOR else f"{role.value} or higher"
    where = "every workspace" if workspace_id == WILDCARD else f"workspace {workspace_id}"
    raise AccessDenied(
        f"permission denied: this needs role {enough} in {where}; {has}",
        workspace_id=workspace_id,
        needed=role,
    )


def visible_workspaces(principal: Principal, role: Role) -> frozenset[str] | None:
    """Workspaces where ``principal`` holds ``role``; None means all (for filtering lists)."""
    if principal.superuser or principal.kind is PrincipalKind.SERVICE:
        return None
    if any(satisfies(r, role) for r in principal.memberships.get(WILDCARD, frozenset())):
        return None
    return frozenset(
        ws for ws, roles in principal.memberships.items() if any(satisfies(r, role) for r in roles)
    )


@dataclass(frozen=True)
class Rule:
    """What one RPC needs from its caller."""

    # Minimum role a person needs in the workspace concerned; None: people may not call it.
    person: Role | None
    # Service identities (mTLS) allowed to call it.
    services: frozenset[str] = frozenset()
    # Touches PHI/PII, key material or what protects them: denied attempts are audited.
    phi: bool = False
    # Needs the role in every workspace ("*"), not one: e.g. creating a workspace.
    platform: bool = False
    # No credentials needed at all (health, reflection).
    open: bool = False


OPEN = Rule(person=None, open=True)

# Whole services anyone may call without credentials.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def rule_for(method: str, rules: Mapping[str, Rule]) -> Rule | None:
    """The rule for a full method name ("/pkg.Service/Method"); None when there is none."""
    service = method.lstrip("/").split("/", 1)[0]
    if service in OPEN_SERVICES:
        return OPEN
    return rules.get(method)


def rules_markdown(rules: Mapping[str, Rule]) -> str:
    """The rules as a Markdown table; docs/security.md holds every service's (a test keeps
    them equal)."""
    lines = [
        "| RPC | people need | services allowed | denials audited |",
        "| --- | --- | --- | --- |",
    ]
    for method, rule in rules.items():
        if rule.person is None:
            person = "—"
        elif rule.person is Role.AUDITOR:
            person = "auditor (or admin)"
        else:
            person = f"{rule.person.value}{' in every workspace (*)' if rule.platform else ''}"
        services = ", ".join(sorted(rule.services)) or "—"
        name = method.lstrip("/").replace("phiseal.", "", 1)
        lines.append(f"| `{name}` | {person} | {services} | {'yes' if rule.phi else 'no'} |")
    return "\n".join(lines) + "\n"


class DenialAuditor(Protocol):
    """Makes a denied PHI-related attempt durable in the audit log (the service's outbox)."""

    async def record_denial(
        self, caller: Caller, method: str, workspace_id: str, reason: str
    ) -> None: ...


@dataclass
class Access:
    """The interceptor's gate: per-method checks and the auditing of denials."""

    # The service's own rules (services/<name>/rules.py): a method not in them is refused.
    rules: Mapping[str, Rule]
    auditor: DenialAuditor | None = None

    def is_open(self, method: str) -> bool:
        rule = rule_for(method, self.rules)
        return rule is not None and rule.open

    def check_method(self, principal: Principal, method: str) -> None:
        """Raises ``PermissionDenied`` unless this kind of caller may call ``method`` at all."""
        rule = rule_for(method, self.rules)
        if rule is None:
            # Fail closed: an RPC nobody decided about is nobody's.
            raise PermissionDenied(f"{method} has no authorization rule; nobody may call it")
        if rule.open or principal.superuser:
            return
        name = method.rsplit("/", 1)[-1]
        if principal.kind is PrincipalKind.SERVICE:
            if principal.subject not in rule.services:
                raise PermissionDenied(f"service {principal.subject} is not allowed to call {name}")
            return
        if principal.kind is not PrincipalKind.PERSON or rule.person is None:
            raise PermissionDenied(f"{name} is for services only; people may not call it")
        if rule.platform:
            require(principal, WILDCARD, rule.person)
            return
        if rule.phi:
            # The domain decides, once it knows the workspace: its denial names the workspace,
            # so the audit record lands in that workspace's chain (every phi method's domain
            # calls require()).
            return
        if not any(satisfies(r, rule.person) for rs in principal.memberships.values() for r in rs):
            enough = "auditor or admin" if rule.person is Role.AUDITOR else f"{rule.person.value}"
            raise AccessDenied(
                f"permission denied: {name} needs role {enough} in the workspace concerned; "
                "your token grants it in none",
                needed=rule.person,
            )

    async def denied(
        self, caller: Caller, method: str, error: PermissionDenied, request: Any
    ) -> None:
        """Logs every denial; audits it when the method touches PHI/PII."""
        workspace_id = getattr(error, "workspace_id", "") or _workspace_of(request)
        rule = rule_for(method, self.rules)
        audited = self.auditor is not None and rule is not None and rule.phi and bool(workspace_id)
        # Without a workspace there is no chain to append to (auditsvc refuses such a record,
        # which would stall the relay): the log line is the whole trace.
        log.warning("access_denied", method=method, workspace_id=workspace_id, audited=audited)
        if not audited or self.auditor is None:
            return
        await self.auditor.record_denial(caller, method, workspace_id, error.message)


def _workspace_of(request: Any) -> str:
    """The request's own workspace_id field, when it has one (protobuf messages)."""
    value = getattr(request, "workspace_id", "")
    return value if isinstance(value, str) else ""
