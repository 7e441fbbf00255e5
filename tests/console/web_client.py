"""Talking to the console over HTTPS without a browser: a client, sign-in, CSRF tokens."""

from __future__ import annotations

import re
import ssl

import httpx

from tests.console.stack import ConsoleStack
from tests.encryptsvc.stack import Admin

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/signin")
    return await client.post("/signin", data={"csrf": csrf_of(form.text), "token": token})


def https(stack: ConsoleStack) -> httpx.AsyncClient:
    """HTTPS to the console, trusting the development CA (no browser needed)."""
    tls = ssl.create_default_context(cadata=stack.secrets.ca_pem.decode())
    return httpx.AsyncClient(base_url=stack.url, verify=tls)


async def workspace(stack: ConsoleStack) -> tuple[str, str]:
    """A HIPAA-eligible workspace with one cloud-mode destination, made over gRPC."""
    admin = Admin(stack.policysvc.channel(), stack.keysvc.channel())
    workspace_id = await admin.workspace("Security clinic")
    return workspace_id, await admin.destination(workspace_id, "Webhook")
