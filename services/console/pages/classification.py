"""Classification: the workspace's fields with class and reason, overrides, custom matchers."""

from __future__ import annotations

from phiseal.common.v1 import common_pb2
from phiseal.policy.v1 import policy_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console import labels
from services.console.web import Page, form_action, text, url

CLASS_VALUES = {
    "red": policy_pb2.CLASSIFICATION_RED,
    "yellow": policy_pb2.CLASSIFICATION_YELLOW,
    "green": policy_pb2.CLASSIFICATION_GREEN,
    "matchers": policy_pb2.CLASSIFICATION_UNSPECIFIED,  # removes the override
}
TARGETS = {"key": policy_pb2.MATCHER_TARGET_KEY, "value": policy_pb2.MATCHER_TARGET_VALUE}
KINDS = {"exact": policy_pb2.MATCH_KIND_EXACT, "regex": policy_pb2.MATCH_KIND_REGEX}


def _here(request: Request) -> str:
    return url("w", request.path_params["ws"], "classification")


async def classification(request: Request) -> Response:
    page = Page.load(request)
    workspace_id = request.path_params["ws"]
    calls = page.calls
    ws = await calls.policy.GetWorkspace(
        policy_pb2.GetWorkspaceRequest(workspace_id=workspace_id),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    reply = await calls.policy.ListClassifications(
        policy_pb2.ListClassificationsRequest(
            workspace_id=workspace_id,
            page=common_pb2.PageRequest(
                page_size=500, page_token=request.query_params.get("page", "")[:500]
            ),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return page.render(
        "classification.html",
        ws=ws.workspace,
        tab="classification",
        fields=reply.fields,
        matchers=reply.matchers,
        next_page=reply.next_page_token,
        can_edit=page.can(workspace_id, "editor"),
        labels=labels,
    )


@form_action(_here)
async def override(page: Page, form: FormData) -> Response:
    workspace_id = page.request.path_params["ws"]
    path = text(form, "path", 500)
    choice = text(form, "classification")
    if choice not in CLASS_VALUES:
        return page.redirect(_here(page.request), error="Choose red, yellow, green or matchers.")
    calls = page.calls
    reply = await calls.policy.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id,
            override=policy_pb2.PathOverride(path=path, classification=CLASS_VALUES[choice]),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    now = labels.label(labels.CLASSES, reply.field.classification)
    return page.redirect(_here(page.request), ok=f"{path} is now {now}.")


@form_action(_here)
async def add_matcher(page: Page, form: FormData) -> Response:
    workspace_id = page.request.path_params["ws"]
    calls = page.calls
    reply = await calls.policy.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id,
            add_matcher=policy_pb2.Matcher(
                name=text(form, "name", 200),
                target=TARGETS.get(text(form, "target"), policy_pb2.MATCHER_TARGET_UNSPECIFIED),
                kind=KINDS.get(text(form, "kind"), policy_pb2.MATCH_KIND_UNSPECIFIED),
                pattern=text(form, "pattern", 2000),
                classification=CLASS_VALUES.get(
                    text(form, "classification"), policy_pb2.CLASSIFICATION_UNSPECIFIED
                ),
            ),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return page.redirect(_here(page.request), ok=f"Matcher {reply.matcher.name} added.")


@form_action(_here)
async def remove_matcher(page: Page, form: FormData) -> Response:
    workspace_id = page.request.path_params["ws"]
    calls = page.calls
    await calls.policy.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=workspace_id, remove_matcher_id=text(form, "matcher_id", 200)
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return page.redirect(_here(page.request), ok="Matcher removed.")


ROUTES = [
    Route("/w/{ws}/classification", classification, methods=["GET"]),
    Route("/w/{ws}/classification/override", override, methods=["POST"]),
    Route("/w/{ws}/classification/matchers", add_matcher, methods=["POST"]),
    Route("/w/{ws}/classification/matchers/remove", remove_matcher, methods=["POST"]),
]
