"""Audit entries as the domain writes them (``services.common.data.outbox`` stores them)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from services.common.audit_rules import check_record
from services.common.security.auth import Caller


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"


JSONValue = str | int | float | bool | None | list[Any] | dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """One audited action. ``details`` names fields and versions; never a value or secret.

    Who acted and in which request are required, never read from context: build an entry
    with ``AuditEntry.by(caller, ...)``.
    """

    event_type: str  # Title Case, past tense: "Destination Encryption Enabled"
    workspace_id: str
    target: str
    actor_user_id: str
    request_id: str
    end_user_id: str = ""
    outcome: Outcome = Outcome.SUCCEEDED
    details: Mapping[str, JSONValue] = field(default_factory=dict)
    access_reason: str = ""
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    def check(self, service: str) -> None:
        """InvalidArgument unless auditsvc would accept this entry (the same rules, shared)."""
        check_record(
            event_id=self.event_id,
            event_type=self.event_type,
            outcome=self.outcome.value,
            timestamp=self.timestamp,
            texts={
                "workspace_id": self.workspace_id,
                "actor_user_id": self.actor_user_id,
                "end_user_id": self.end_user_id,
                "target": self.target,
                "request_id": self.request_id,
                "service": service,
                "access_reason": self.access_reason,
            },
            details=self.details,
        )

    @classmethod
    def by(
        cls,
        caller: Caller,
        *,
        event_type: str,
        workspace_id: str,
        target: str,
        outcome: Outcome = Outcome.SUCCEEDED,
        details: Mapping[str, JSONValue] | None = None,
    ) -> AuditEntry:
        """An entry for what ``caller`` did, attributed to it and to its request."""
        return cls(
            event_type=event_type,
            workspace_id=workspace_id,
            target=target,
            actor_user_id=caller.actor_id,
            request_id=caller.request_id,
            outcome=outcome,
            details=details or {},
        )

    def to_json(self, service: str) -> dict[str, JSONValue]:
        """The wire form, field names as in phiseal.audit.v1.AuditEvent."""
        return {
            "event_id": self.event_id,
            "workspace_id": self.workspace_id,
            "actor_user_id": self.actor_user_id,
            "event_type": self.event_type,
            "end_user_id": self.end_user_id,
            "timestamp": self.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "outcome": self.outcome.value,
            "target": self.target,
            "request_id": self.request_id,
            "service": service,
            "access_reason": self.access_reason,
            "details": dict(self.details),
        }
