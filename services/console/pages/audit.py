"""The audit log: filters, paging, export and the chain's verification status.

Filters can name an end user, so they travel in form bodies (POST), never in a URL.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from phiseal.audit.v1 import audit_pb2
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from services.console import labels
from services.console.web import Page, form_action, text, url

PAGE_SIZE = 50
DEFAULT_REASON = "Reviewed in the PHIseal console"
EXPORT_FORMATS = {
    "jsonl": (audit_pb2.EXPORT_FORMAT_JSONL, "application/x-ndjson", "jsonl"),
    "csv": (audit_pb2.EXPORT_FORMAT_CSV, "text/csv", "csv"),
}


@dataclass(frozen=True)
class Filters:
    """What the person asked for, as typed (times are UTC, ``YYYY-MM-DDTHH:MM``)."""

    event_type: str = ""
    actor: str = ""
    end_user: str = ""
    start: str = ""
    end: str = ""
    reason: str = DEFAULT_REASON

    @classmethod
    def from_form(cls, form: FormData) -> Filters:
        return cls(
            event_type=text(form, "event_type", 200),
            actor=text(form, "actor", 200),
            end_user=text(form, "end_user", 200),
            start=text(form, "start", 40),
            end=text(form, "end", 40),
            reason=text(form, "reason", 500) or DEFAULT_REASON,
        )

    def proto(self, workspace_id: str) -> audit_pb2.AuditFilter:
        flt = audit_pb2.AuditFilter(
            workspace_id=workspace_id,
            actor_user_id=self.actor,
            event_type=self.event_type,
            end_user_id=self.end_user,
        )
        for raw, target in ((self.start, flt.start_time), (self.end, flt.end_time)):
            if raw:
                target.CopyFrom(_timestamp(raw))
        return flt


class BadFilter(ValueError):
    pass


def _timestamp(raw: str) -> Timestamp:
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise BadFilter(f"{raw!r} is not a time: use YYYY-MM-DDTHH:MM (UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _here(request: Request) -> str:
    return url("w", request.path_params["ws"], "audit")


async def _render(page: Page, filters: Filters, page_token: str = "") -> Response:
    workspace_id = page.request.path_params["ws"]
    calls = page.calls
    md, timeout = calls.metadata, calls.timeout
    ws = await calls.policy.GetWorkspace(
        policy_pb2.GetWorkspaceRequest(workspace_id=workspace_id), metadata=md, timeout=timeout
    )
    problem = ""
    records: list[audit_pb2.AuditRecord] = []
    next_page = ""
    try:
        flt = filters.proto(workspace_id)
    except BadFilter as exc:
        problem = str(exc)
    else:
        reply = await calls.audit.QueryEvents(
            audit_pb2.QueryEventsRequest(
                filter=flt,
                page=common_pb2.PageRequest(page_size=PAGE_SIZE, page_token=page_token),
                access_reason=filters.reason,
            ),
            metadata=md,
            timeout=timeout,
        )
        records, next_page = list(reply.records), reply.next_page_token
    chain = await calls.audit.VerifyChain(
        audit_pb2.VerifyChainRequest(workspace_id=workspace_id), metadata=md, timeout=timeout
    )
    return page.render(
        "audit.html",
        status=400 if problem else 200,
        ws=ws.workspace,
        tab="audit",
        filters=filters,
        records=records,
        next_page=next_page,
        problem=problem,
        chain=chain,
        labels=labels,
        problem_kind=audit_pb2.ProblemKind.Name,
    )


async def audit_log(request: Request) -> Response:
    return await _render(Page.load(request), Filters())


@form_action(_here)
async def audit_query(page: Page, form: FormData) -> Response:
    return await _render(page, Filters.from_form(form), text(form, "page_token", 1000))


@form_action(_here)
async def audit_export(page: Page, form: FormData) -> Response:
    """Streams ExportEvents to the browser as a file; nothing is kept on the way."""
    workspace_id = page.request.path_params["ws"]
    filters = Filters.from_form(form)
    fmt, media_type, suffix = EXPORT_FORMATS.get(text(form, "format"), EXPORT_FORMATS["jsonl"])
    try:
        flt = filters.proto(workspace_id)
    except BadFilter as exc:
        return page.redirect(_here(page.request), error=str(exc))
    calls = page.calls
    stream = calls.audit.ExportEvents(
        audit_pb2.ExportEventsRequest(filter=flt, format=fmt, access_reason=filters.reason),
        metadata=calls.metadata,
        timeout=max(calls.timeout, 300.0),
    )
    # The first chunk is awaited here so that a refusal becomes a message, not a broken file.
    chunks = stream.__aiter__()
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = audit_pb2.ExportEventsResponse()

    async def body() -> AsyncIterator[bytes]:
        yield first.chunk
        async for piece in chunks:
            yield piece.chunk

    name = f"audit-{re.sub(r'[^A-Za-z0-9_.-]', '_', workspace_id)}.{suffix}"
    return page.finish(
        StreamingResponse(
            body(),
            media_type=media_type,
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )
    )


ROUTES = [
    Route("/w/{ws}/audit", audit_log, methods=["GET"]),
    Route("/w/{ws}/audit", audit_query, methods=["POST"]),
    Route("/w/{ws}/audit/export", audit_export, methods=["POST"]),
]
