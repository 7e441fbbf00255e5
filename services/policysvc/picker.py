"""The field picker's question: which fields of a destination's events may be encrypted.

ListClassifications answers per workspace; the picker answers per destination, because
whether anything can be selected also depends on the destination (its type, its workspace's
HIPAA eligibility) and on what its policy already encrypts. It reuses the classification
listing (and so its sample handling and audit record) and adds, for every field that cannot be
selected, how to change that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.errors import NotFound
from services.common.security.auth import Caller, Role
from services.common.security.authz import require
from services.policysvc.catalog import check_can_encrypt, require_id
from services.policysvc.classification import Classification, FieldClassification
from services.policysvc.policy import PolicyContext
from services.policysvc.privacy import Privacy


class ContextStore(Protocol):
    async def load_context(self, destination_id: str) -> PolicyContext | None: ...


@dataclass(frozen=True)
class Choice:
    field: FieldClassification
    encrypted: bool = False
    how_to_change: str = ""


@dataclass(frozen=True)
class Picker:
    selectable: list[Choice]
    not_selectable: list[Choice]
    destination_problems: list[str]
    next_page_token: str


def how_to_change(field: FieldClassification) -> str:
    """What a person does to make ``field`` selectable, or why they should not."""
    override = (
        f"SetClassification override {{path: {field.path}, classification: CLASSIFICATION_YELLOW}}"
    )
    if field.classification is Classification.RED:
        return (
            "red fields are restricted: better stop sending this field at all; if the "
            f"classification is wrong, reclassify it with {override}"
        )
    return (
        f"green fields are not sensitive by any matcher; if this one is, reclassify it with "
        f"{override}, or add a custom KEY matcher for keys like it"
    )


class FieldPicker:
    """ListSelectableFields."""

    def __init__(self, contexts: ContextStore, privacy: Privacy) -> None:
        self._contexts = contexts
        self._privacy = privacy

    async def list(
        self,
        caller: Caller,
        destination_id: str,
        paths: Sequence[str],
        samples: Sequence[str],
        page_size: int,
        page_token: str,
    ) -> Picker:
        ctx = await self._contexts.load_context(require_id(destination_id, "destination_id"))
        if ctx is None:
            raise NotFound(f"destination {destination_id} does not exist")
        require(caller.principal, ctx.workspace.workspace_id, Role.VIEWER)
        page = await self._privacy.list_classifications(
            caller, ctx.workspace.workspace_id, paths, samples, page_size, page_token
        )
        encrypted = set(ctx.head.fields) if ctx.head.enabled else set()
        selectable, not_selectable = [], []
        for field in page.fields:
            if field.classification is Classification.YELLOW:
                selectable.append(Choice(field, encrypted=field.path in encrypted))
            else:
                not_selectable.append(Choice(field, how_to_change=how_to_change(field)))
        return Picker(
            selectable,
            not_selectable,
            check_can_encrypt(ctx.workspace, ctx.destination),
            page.next_page_token,
        )
