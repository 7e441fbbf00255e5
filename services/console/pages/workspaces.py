"""Workspaces: the list, one workspace with its HIPAA eligibility, and its destinations."""

from __future__ import annotations

import grpc
from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common.security.authz import WILDCARD
from services.console import labels
from services.console.web import Page, error_message, form_action, text, url


async def workspace_list(request: Request) -> Response:
    """No RPC lists a person's workspaces: the list is those the token names and those
    opened in this session; any other is opened by its id."""
    page = Page.load(request)
    assert page.claims is not None
    named = [w for w in page.claims.memberships if w != WILDCARD]
    ids = list(dict.fromkeys([*page.session.recent_workspaces, *named]))
    calls = page.calls
    found: list[tuple[str, policy_pb2.Workspace | None, str]] = []
    for workspace_id in ids:
        try:
            reply = await calls.policy.GetWorkspace(
                policy_pb2.GetWorkspaceRequest(workspace_id=workspace_id),
                metadata=calls.metadata,
                timeout=calls.timeout,
            )
            found.append((workspace_id, reply.workspace, ""))
        except grpc.aio.AioRpcError as exc:
            found.append((workspace_id, None, error_message(exc)))
    return page.render(
        "workspaces.html",
        workspaces=found,
        can_create=page.can(WILDCARD, "admin"),
        every_workspace=WILDCARD in page.claims.memberships,
    )


@form_action(lambda r: "/workspaces")
async def create_workspace(page: Page, form: FormData) -> Response:
    calls = page.calls
    reply = await calls.policy.CreateWorkspace(
        policy_pb2.CreateWorkspaceRequest(name=text(form, "name", 200)),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    workspace_id = reply.workspace.workspace_id
    page.update(page.session.with_workspace(workspace_id))
    return page.redirect(url("w", workspace_id), ok=f"Workspace {reply.workspace.name} created.")


@form_action(lambda r: "/workspaces")
async def open_workspace(page: Page, form: FormData) -> Response:
    calls = page.calls
    reply = await calls.policy.GetWorkspace(
        policy_pb2.GetWorkspaceRequest(workspace_id=text(form, "workspace_id", 200)),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    workspace_id = reply.workspace.workspace_id
    page.update(page.session.with_workspace(workspace_id))
    return page.redirect(url("w", workspace_id))


async def workspace(request: Request) -> Response:
    page = Page.load(request)
    workspace_id = request.path_params["ws"]
    calls = page.calls
    reply = await calls.policy.GetWorkspace(
        policy_pb2.GetWorkspaceRequest(workspace_id=workspace_id),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    if workspace_id not in page.session.recent_workspaces:
        page.update(page.session.with_workspace(workspace_id))
    return page.render(
        "workspace.html",
        ws=reply.workspace,
        tab="overview",
        can_admin=page.can(workspace_id, "admin"),
        when=labels.when,
    )


@form_action(lambda r: url("w", r.path_params["ws"]))
async def set_hipaa(page: Page, form: FormData) -> Response:
    workspace_id = page.request.path_params["ws"]
    eligible = text(form, "eligible") == "yes"
    calls = page.calls
    await calls.policy.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(
            workspace_id=workspace_id,
            eligible=eligible,
            baa_reference=text(form, "baa_reference", 200) if eligible else "",
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    said = "marked HIPAA eligible" if eligible else "no longer HIPAA eligible"
    return page.redirect(url("w", workspace_id), ok=f"The workspace is {said}.")


async def destinations(request: Request) -> Response:
    page = Page.load(request)
    workspace_id = request.path_params["ws"]
    calls = page.calls
    ws = await calls.policy.GetWorkspace(
        policy_pb2.GetWorkspaceRequest(workspace_id=workspace_id),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    token = request.query_params.get("page", "")[:500]
    reply = await calls.policy.ListDestinations(
        policy_pb2.ListDestinationsRequest(
            workspace_id=workspace_id,
            page=common_pb2.PageRequest(page_size=100, page_token=token),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return page.render(
        "destinations.html",
        ws=ws.workspace,
        tab="destinations",
        destinations=reply.destinations,
        next_page=reply.next_page_token,
        can_edit=page.can(workspace_id, "editor"),
        types=labels.DESTINATION_TYPES,
        cloud_mode=labels.CLOUD_MODE,
        why_not=labels.WHY_NO_ENCRYPTION,
        when=labels.when,
    )


@form_action(lambda r: url("w", r.path_params["ws"], "destinations"))
async def create_destination(page: Page, form: FormData) -> Response:
    workspace_id = page.request.path_params["ws"]
    raw_type = text(form, "type")
    kind = int(raw_type) if raw_type.isdigit() else 0
    calls = page.calls
    reply = await calls.policy.CreateDestination(
        policy_pb2.CreateDestinationRequest(
            workspace_id=workspace_id,
            name=text(form, "name", 200),
            type=kind,  # type: ignore[arg-type]  # the service refuses an unknown value
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    dst = reply.destination
    return page.redirect(
        url("w", workspace_id, "d", dst.destination_id), ok=f"Destination {dst.name} created."
    )


ROUTES = [
    Route("/workspaces", workspace_list, methods=["GET"]),
    Route("/workspaces", create_workspace, methods=["POST"]),
    Route("/workspaces/open", open_workspace, methods=["POST"]),
    Route("/w/{ws}", workspace, methods=["GET"]),
    Route("/w/{ws}/hipaa", set_hipaa, methods=["POST"]),
    Route("/w/{ws}/destinations", destinations, methods=["GET"]),
    Route("/w/{ws}/destinations", create_destination, methods=["POST"]),
]
