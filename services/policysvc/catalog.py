"""Workspaces and destinations: who may have encryption, and where events go."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from services.common.audit import AuditEntry
from services.common.data.paging import Page, encode_token
from services.common.errors import InvalidArgument, NotFound
from services.common.security.auth import Caller, Role
from services.common.security.authz import AccessDenied, require, visible_workspaces

MAX_NAME = 200
MAX_ID = 64
MAX_BAA_REFERENCE = 200


class DestinationType(StrEnum):
    EVENT_STREAM_CLOUD_MODE = "event_stream_cloud_mode"
    EVENT_STREAM_DEVICE_MODE = "event_stream_device_mode"
    WAREHOUSE = "warehouse"
    STORAGE = "storage"
    REVERSE_ETL = "reverse_etl"


@dataclass(frozen=True)
class HipaaEligibility:
    eligible: bool = False
    baa_reference: str = ""
    set_by: str = ""
    set_at: datetime | None = None


@dataclass(frozen=True)
class Workspace:
    workspace_id: str
    name: str
    created_at: datetime
    created_by: str
    hipaa: HipaaEligibility = HipaaEligibility()


@dataclass(frozen=True)
class Destination:
    destination_id: str
    workspace_id: str
    name: str
    type: DestinationType
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class DestinationPage:
    destinations: list[Destination]
    next_page_token: str


def new_id(prefix: str) -> str:
    """A short, URL-safe, dot-free id: prefix + 20 hex characters (80 random bits)."""
    return prefix + secrets.token_hex(10)


def require_name(value: str, what: str) -> str:
    """A display name: required, printable, at most MAX_NAME characters."""
    name = value.strip()
    if not name:
        raise InvalidArgument(f"{what} is required")
    if len(name) > MAX_NAME or not name.isprintable():
        raise InvalidArgument(f"{what} must be printable and at most {MAX_NAME} characters")
    return name


def require_id(value: str, what: str) -> str:
    """An object id from a request: required and plausibly ours (never echoed if too long)."""
    if not value.strip():
        raise InvalidArgument(f"{what} is required")
    # Ours are a prefix and hex (new_id): a space is always a copy-and-paste slip.
    if len(value) > MAX_ID or not value.isprintable() or any(ch.isspace() for ch in value):
        raise InvalidArgument(
            f"{what} is not a valid id: use the id a Create call returned, without spaces"
        )
    return value


def check_can_encrypt(workspace: Workspace, destination: Destination) -> list[str]:
    """Why this destination cannot have encryption (empty when it can)."""
    problems = []
    if not workspace.hipaa.eligible:
        problems.append(
            f"workspace {workspace.workspace_id} is not HIPAA eligible; mark it eligible with "
            "SetHipaaEligibility (eligible=true, baa_reference=<signed BAA id>) first"
        )
    if destination.type is not DestinationType.EVENT_STREAM_CLOUD_MODE:
        problems.append(
            f"destination {destination.destination_id} is of type {destination.type.value}; "
            "only event-stream cloud-mode destinations can have encryption"
        )
    return problems


class CatalogStore(Protocol):
    async def insert_workspace(self, workspace: Workspace, audit: AuditEntry) -> None: ...

    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...

    async def update_hipaa(
        self,
        workspace_id: str,
        hipaa: HipaaEligibility,
        audit: Callable[[Workspace], AuditEntry],
    ) -> Workspace | None: ...

    async def insert_destination(self, destination: Destination, audit: AuditEntry) -> None: ...

    async def get_destination(self, destination_id: str) -> Destination | None: ...

    async def list_destinations(
        self, workspace_id: str, after: int, limit: int
    ) -> Sequence[tuple[int, Destination]]: ...


class Catalog:
    """The workspace and destination rules; every change writes its audit entry with it."""

    def __init__(self, store: CatalogStore, clock: Callable[[], datetime] | None = None) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    async def create_workspace(self, caller: Caller, name: str) -> Workspace:
        workspace = Workspace(
            workspace_id=new_id("ws_"),
            name=require_name(name, "name"),
            created_at=self._clock(),
            created_by=caller.actor_id,
        )
        await self._store.insert_workspace(
            workspace,
            AuditEntry.by(
                caller,
                event_type="Workspace Created",
                workspace_id=workspace.workspace_id,
                target=workspace.workspace_id,
                details={"name": workspace.name},
            ),
        )
        return workspace

    async def get_workspace(self, caller: Caller, workspace_id: str) -> Workspace:
        # Authorized before the lookup: a stranger learns nothing about which workspaces exist.
        require(caller.principal, require_id(workspace_id, "workspace_id"), Role.VIEWER)
        workspace = await self._store.get_workspace(workspace_id)
        if workspace is None:
            raise NotFound(f"workspace {workspace_id} does not exist; create it first")
        return workspace

    async def set_hipaa_eligibility(
        self, caller: Caller, workspace_id: str, eligible: bool, baa_reference: str
    ) -> Workspace:
        """Records who declared the workspace (in)eligible, when, and under which BAA."""
        require(caller.principal, require_id(workspace_id, "workspace_id"), Role.ADMIN)
        reference = baa_reference.strip()
        if eligible and not reference:
            raise InvalidArgument(
                "baa_reference is required to mark a workspace HIPAA eligible: give the id of "
                "the signed business associate agreement"
            )
        if len(reference) > MAX_BAA_REFERENCE or not reference.isprintable():
            raise InvalidArgument(
                f"baa_reference must be printable and at most {MAX_BAA_REFERENCE} characters"
            )
        hipaa = HipaaEligibility(
            eligible=eligible,
            baa_reference=reference,
            set_by=caller.actor_id,
            set_at=self._clock(),
        )

        def audit(before: Workspace) -> AuditEntry:
            return AuditEntry.by(
                caller,
                event_type="Workspace HIPAA Eligibility Modified",
                workspace_id=workspace_id,
                target=workspace_id,
                details={
                    "eligible": eligible,
                    "previously_eligible": before.hipaa.eligible,
                    "baa_reference": reference,
                },
            )

        workspace = await self._store.update_hipaa(workspace_id, hipaa, audit)
        if workspace is None:
            raise NotFound(f"workspace {workspace_id} does not exist; create it first")
        return replace(workspace, hipaa=hipaa)

    async def create_destination(
        self, caller: Caller, workspace_id: str, name: str, type_: DestinationType
    ) -> Destination:
        require(caller.principal, require_id(workspace_id, "workspace_id"), Role.EDITOR)
        destination = Destination(
            destination_id=new_id("dst_"),
            workspace_id=require_id(workspace_id, "workspace_id"),
            name=require_name(name, "name"),
            type=type_,
            created_at=self._clock(),
            created_by=caller.actor_id,
        )
        await self._store.insert_destination(
            destination,
            AuditEntry.by(
                caller,
                event_type="Destination Created",
                workspace_id=workspace_id,
                target=destination.destination_id,
                details={"name": destination.name, "type": destination.type.value},
            ),
        )
        return destination

    async def get_destination(self, caller: Caller, destination_id: str) -> Destination:
        found = await self._store.get_destination(require_id(destination_id, "destination_id"))
        if found is None:
            raise NotFound(f"destination {destination_id} does not exist")
        require(caller.principal, found.workspace_id, Role.VIEWER)
        return found

    async def destination_status(
        self, caller: Caller, destination_id: str
    ) -> tuple[Destination, list[str]]:
        """The destination and why it cannot have encryption (empty when it can)."""
        destination = await self.get_destination(caller, destination_id)
        workspace = await self._store.get_workspace(destination.workspace_id)
        if workspace is None:  # a destination's workspace is never deleted; fail closed anyway
            raise NotFound(f"workspace {destination.workspace_id} does not exist")
        return destination, check_can_encrypt(workspace, destination)

    async def authorize_watch(self, caller: Caller, destination_ids: frozenset[str]) -> None:
        """WatchPolicies: services and viewers of every workspace may watch everything; a person
        names the destinations, each in a workspace where they are a viewer (or better)."""
        if visible_workspaces(caller.principal, Role.VIEWER) is None:
            return
        if not destination_ids:
            raise AccessDenied(
                "permission denied: watching every destination needs viewer in every "
                "workspace; name destination_ids in workspaces where you are a viewer",
                needed=Role.VIEWER,
            )
        for destination_id in sorted(destination_ids):
            await self.get_destination(caller, destination_id)

    async def list_destinations(
        self, caller: Caller, workspace_id: str, page_size: int, page_token: str
    ) -> DestinationPage:
        """One page, oldest first; a full page carries a token for the next."""
        await self.get_workspace(caller, workspace_id)
        page = Page.parse(page_size, page_token, f"destinations:{workspace_id}")
        # One extra row tells whether another page exists without a second query.
        rows = await self._store.list_destinations(workspace_id, page.after, page.size + 1)
        more = len(rows) > page.size
        rows = rows[: page.size]
        token = encode_token(f"destinations:{workspace_id}", rows[-1][0]) if more else ""
        return DestinationPage([d for _, d in rows], token)
