"""The authorization model in one place: what every RPC needs, and the checks that enforce it.

Two steps. The interceptor knows the method and the caller: ``Access.check_method`` refuses a
service outside its allow-list, a person calling a service-only method, or a person who holds
the needed role in no workspace at all. The domain knows the workspace (often only after a
lookup): it calls ``require(principal, workspace_id, Role.X)``. A denied attempt on a method
marked ``phi`` is handed to a ``DenialAuditor`` so it lands in the audit log.

Roles: viewer < editor < admin is a ladder; auditor stands apart and only reads the audit
log, which admins may read too. A membership under ``"*"`` counts in every workspace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from services.common.errors import PermissionDenied
from services.common.security.auth import Principal, Role

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
    if principal.superuser or principal.kind == "service":
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
    if principal.superuser or principal.kind == "service":
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
_KEYS = "/phiseal.keys.v1.KeyService/"
_POLICY = "/phiseal.policy.v1.PolicyService/"
_ENCRYPT = "/phiseal.encrypt.v1.EncryptService/"
_AUDIT = "/phiseal.audit.v1.AuditService/"
_ENCRYPTSVC = frozenset({"encryptsvc"})

# Every RPC of protos/ has exactly one entry (tests/common/test_authz.py checks it). Reads are
# viewer; changes that widen protection or configure are editor; changes that weaken
# protection, govern HIPAA eligibility or handle key material are admin.
RULES: Mapping[str, Rule] = {
    # keysvc: key material and the destination's ability to decrypt.
    _KEYS + "GenerateKeyPair": Rule(Role.ADMIN, phi=True),
    _KEYS + "RegenerateKeyPair": Rule(Role.ADMIN, phi=True),
    _KEYS + "ConfirmKey": Rule(Role.ADMIN, phi=True),
    _KEYS + "ImportPublicKey": Rule(Role.ADMIN, phi=True),
    _KEYS + "GetPublicKey": Rule(Role.VIEWER, services=_ENCRYPTSVC),
    _KEYS + "ListKeyVersions": Rule(Role.VIEWER),
    _KEYS + "WatchKeys": Rule(Role.VIEWER, services=_ENCRYPTSVC),
    # policysvc.
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
    _POLICY + "PreviewEncryption": Rule(Role.EDITOR, phi=True),
    _POLICY + "WatchPolicies": Rule(Role.VIEWER, services=_ENCRYPTSVC),
    # encryptsvc: the event pipeline only (client certificate "producer"). People are refused:
    # encryptsvc caches no workspace to check a role against, and PHI has no business passing
    # through a person's grpcurl; PreviewEncryption is their dry run.
    _ENCRYPT + "EncryptEvents": Rule(None, services=frozenset({"producer"}), phi=True),
    # auditsvc: only keysvc and policysvc write; people read with auditor (or admin).
    _AUDIT + "RecordEvents": Rule(None, services=frozenset({"keysvc", "policysvc"})),
    _AUDIT + "QueryEvents": Rule(Role.AUDITOR, phi=True),
    _AUDIT + "ExportEvents": Rule(Role.AUDITOR, phi=True),
    _AUDIT + "VerifyChain": Rule(Role.AUDITOR),
}

# Whole services anyone may call without credentials.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def rule_for(method: str, rules: Mapping[str, Rule] = RULES) -> Rule | None:
    """The rule for a full method name ("/pkg.Service/Method"); None when there is none."""
    service = method.lstrip("/").split("/", 1)[0]
    if service in OPEN_SERVICES:
        return OPEN
    return rules.get(method)


def rules_markdown(rules: Mapping[str, Rule] = RULES) -> str:
    """The rules as the Markdown table in docs/security.md (a test keeps them equal)."""
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
        self, principal: Principal, method: str, workspace_id: str, reason: str
    ) -> None: ...


@dataclass
class Access:
    """The interceptor's gate: per-method checks and the auditing of denials."""

    rules: Mapping[str, Rule] = field(default_factory=lambda: RULES)
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
        if principal.kind == "service":
            if principal.subject not in rule.services:
                raise PermissionDenied(f"service {principal.subject} is not allowed to call {name}")
            return
        if principal.kind != "person" or rule.person is None:
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
        self, principal: Principal, method: str, error: PermissionDenied, request: Any
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
        await self.auditor.record_denial(principal, method, workspace_id, error.message)


def _workspace_of(request: Any) -> str:
    """The request's own workspace_id field, when it has one (protobuf messages)."""
    value = getattr(request, "workspace_id", "")
    return value if isinstance(value, str) else ""
