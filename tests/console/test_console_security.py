"""The console's security: headers on every page, the session cookie's flags, CSRF on every
form, nothing secret in a URL or log line, and a viewer who sees no button an editor has."""

from __future__ import annotations

import io
import re

import httpx
import pytest
from phiseal.policy.v1 import policy_pb2
from playwright.async_api import BrowserContext, Page
from starlette.routing import Route

from services.common.security.auth import Role
from services.common.server.logging import configure_logging
from services.console.session import COOKIE
from services.console.web import CSP
from tests.console.stack import ConsoleStack
from tests.console.web_client import csrf_of, https, sign_in, workspace
from tests.encryptsvc.stack import PERSON, Admin
from tests.secret_search import pem_body_lines


async def test_every_page_sends_the_security_headers(
    stack: ConsoleStack, client: httpx.AsyncClient
) -> None:
    """Strict CSP (no inline script), no-store, framing and sniffing off: on pages, redirects,
    errors and refusals alike."""
    workspace_id, destination_id = await workspace(stack)
    signed = await sign_in(client, stack.secrets.admin_token("carol"))
    base = f"/w/{workspace_id}"
    responses = [
        signed,
        await client.get("/signin"),
        await client.get("/workspaces"),
        await client.get(base),
        await client.get(f"{base}/destinations"),
        await client.get(f"{base}/d/{destination_id}"),
        await client.get(f"{base}/d/{destination_id}/disable"),
        await client.get(f"{base}/classification"),
        await client.get(f"{base}/audit"),
        await client.get(f"{base}/d/dst_missing"),
        await client.get("/no/such/page"),
        await client.post("/workspaces", data={"name": "no csrf"}),
        await client.get("/healthz"),
    ]
    assert [r.status_code for r in responses] == [
        303,
        200,
        200,
        200,
        200,
        200,
        200,
        200,
        200,
        404,
        404,
        403,
        200,
    ]
    for response in responses:
        headers = response.headers
        assert headers["content-security-policy"] == CSP, response.url
        assert "unsafe-inline" not in CSP
        assert "script-src 'self'" in CSP
        assert headers["cache-control"] == "no-store", response.url
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    html = (await client.get(f"{base}/d/{destination_id}")).text
    assert "<script>" not in html
    assert " on" + "click=" not in html
    assert (await client.get("/static/console.css")).headers["cache-control"].startswith("public")


async def test_the_session_cookie_is_host_only_httponly_secure_strict(
    stack: ConsoleStack, client: httpx.AsyncClient
) -> None:
    """The cookie carries the sealed token: never readable by script, sent only over HTTPS
    and only on requests from the console's own pages."""
    token = stack.secrets.admin_token("carol")
    response = await sign_in(client, token)
    set_cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
    assert set_cookie.startswith(f"{COOKIE}=")
    assert {"httponly", "secure", "samesite", "path"} <= attributes
    assert "samesite=strict" in set_cookie.lower()
    assert "domain" not in attributes
    assert token not in set_cookie


async def test_a_form_without_its_csrf_token_is_refused(
    stack: ConsoleStack, client: httpx.AsyncClient
) -> None:
    """Every POST route refuses a form with no CSRF token, or another session's, and the
    service is never called (the workspace's eligibility stays as it was)."""
    workspace_id, destination_id = await workspace(stack)
    await sign_in(client, stack.secrets.admin_token("carol"))
    routes = [
        r
        for r in stack.console.app.routes
        if isinstance(r, Route) and r.methods is not None and "POST" in r.methods
    ]
    assert len(routes) >= 15
    async with https(stack) as other:
        other_session = csrf_of((await other.get("/signin")).text)
    for route in routes:
        path = route.path.replace("{ws}", workspace_id).replace("{dst}", destination_id)
        for csrf in ({}, {"csrf": ""}, {"csrf": other_session}):
            response = await client.post(path, data={**csrf, "eligible": "no"})
            assert (path, response.status_code) == (path, 403)
            assert "CSRF token is missing or stale" in response.text
    admin = Admin(stack.policysvc.channel(), stack.keysvc.channel())
    reply = await admin.policy.GetWorkspace(
        policy_pb2.GetWorkspaceRequest(workspace_id=workspace_id), metadata=PERSON
    )
    assert reply.workspace.hipaa.eligible


async def test_no_token_or_private_key_reaches_a_url_or_a_log_line(
    stack: ConsoleStack, client: httpx.AsyncClient
) -> None:
    """Sign in, generate a key (the page holds it, uncached), resubmit the same form: the
    token and the key appear in no URL and no log line, and no second key is delivered."""
    workspace_id, destination_id = await workspace(stack)
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    token = stack.secrets.admin_token("carol")
    visited = [str((await sign_in(client, token)).url)]
    tab = f"/w/{workspace_id}/d/{destination_id}"
    page = await client.get(tab)
    form = {
        "csrf": csrf_of(page.text),
        "request_id": "console-test-request-1",
        "algorithm": "1",
    }
    delivered = await client.post(f"{tab}/keys/generate", data=form)
    assert delivered.status_code == 200
    assert delivered.headers["cache-control"] == "no-store"
    found = re.search(r'id="private-key-pem"[^>]*>([^<]+)</textarea>', delivered.text)
    assert found
    pem = found.group(1).replace("&#43;", "+")
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    again = await client.post(f"{tab}/keys/generate", data=form, follow_redirects=True)
    assert "BEGIN PRIVATE KEY" not in again.text
    assert "Already exists" in again.text or "Failed precondition" in again.text
    visited += [str(r.url) for r in (page, delivered, again, *again.history)]
    secrets_seen = [token, *pem_body_lines(pem)]
    text = logs.getvalue()
    assert "http_request" in text
    assert [s for s in secrets_seen if s in text] == []
    assert [u for u in visited for s in secrets_seen if s in u] == []


async def _buttons(page: Page) -> set[str]:
    names = await page.locator("main button").all_inner_texts()
    return {n.strip() for n in names}


async def _sign_in_browser(page: Page, url: str, token: str) -> None:
    await page.goto(f"{url}/signin")
    await page.locator("#token").fill(token)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url("**/workspaces")


@pytest.mark.slow
async def test_a_viewer_sees_no_button_an_editor_has(
    stack: ConsoleStack, context: BrowserContext
) -> None:
    """Destinations, Data Encryption and Classification offer a viewer no action; an editor
    gets the editing ones but not the admin's key buttons; a viewer's forged form is refused
    by the service, and the console shows its message."""
    workspace_id, destination_id = await workspace(stack)
    pages = [
        f"/w/{workspace_id}/destinations",
        f"/w/{workspace_id}/d/{destination_id}",
        f"/w/{workspace_id}/classification",
    ]
    seen: dict[Role, set[str]] = {}
    for role in (Role.VIEWER, Role.EDITOR):
        browser_page = await context.new_page()
        token = stack.secrets.token(f"{role.value}-person", {workspace_id: [role]})
        await _sign_in_browser(browser_page, stack.url, token)
        seen[role] = set()
        for path in pages:
            await browser_page.goto(stack.url + path)
            seen[role] |= await _buttons(browser_page)
        if role is Role.VIEWER:
            await browser_page.goto(stack.url + pages[1])
            assert await browser_page.locator("input[name=field]:enabled").count() == 0
            forged = await browser_page.request.post(
                f"{stack.url}/w/{workspace_id}/destinations",
                form={
                    "csrf": await browser_page.locator("input[name=csrf]").first.input_value(),
                    "name": "forged",
                    "type": "1",
                },
            )
            assert "Permission denied" in await forged.text()
        await browser_page.close()
        await context.clear_cookies()
    editor_only = {
        "Create destination",
        "Save encryption settings",
        "Save override",
        "Add matcher",
    }
    admin_only = {"Generate Encryption Keys", "Import public key", "Regenerate"}
    assert seen[Role.VIEWER] & (editor_only | admin_only) == set()
    assert editor_only <= seen[Role.EDITOR]
    assert seen[Role.EDITOR] & admin_only == set()


async def test_turning_encryption_off_needs_the_confirmation_naming_the_destination(
    stack: ConsoleStack, client: httpx.AsyncClient
) -> None:
    """A turn-off form that does not repeat the destination is refused by policysvc; the
    console shows that message on the confirmation page and encryption stays on."""
    workspace_id, destination_id = await workspace(stack)
    admin = Admin(stack.policysvc.channel(), stack.keysvc.channel())
    await admin.make_yellow(workspace_id, ["traits.email"])
    version = await admin.enable(destination_id, ["traits.email"])
    await sign_in(client, stack.secrets.admin_token("carol"))
    confirm = f"/w/{workspace_id}/d/{destination_id}/disable"
    page = await client.get(confirm)
    assert "Turn off data encryption?" in page.text
    refused = await client.post(
        confirm,
        data={
            "csrf": csrf_of(page.text),
            "expected_version": str(version),
            "confirm_destination_id": "dst_someone_else",
        },
        follow_redirects=True,
    )
    assert str(refused.url).endswith(confirm)
    assert "Invalid argument:" in refused.text
    policy = await admin.policy.GetPolicy(
        policy_pb2.GetPolicyRequest(destination_id=destination_id), metadata=PERSON
    )
    assert (policy.policy.enabled, policy.policy.version) == (True, version)
