"""Console pages over HTTPS without a browser: importing a public key with confirmation, and
the audit log's paging and filters."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from phiseal_decrypt import Decryptor, Keyring
from phiseal_dev.testing import eventually
from services.console.pages import audit
from tests.console.stack import ConsoleStack
from tests.console.web_client import csrf_of, sign_in, workspace

SEQUENCES = re.compile(r"<tr class=\"\w*\">\s*<td>(\d+)</td>")


async def test_an_imported_key_waits_for_its_confirmation(
    stack: ConsoleStack, client: httpx.AsyncClient
) -> None:
    """Import public key (pending): the console shows the challenge; the customer's own
    private key opens it with the kit, and the answer activates the key."""
    workspace_id, destination_id = await workspace(stack)
    await sign_in(client, stack.secrets.admin_token("dana"))
    private = x25519.X25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tab = f"/w/{workspace_id}/d/{destination_id}"
    page = await client.get(tab)
    shown = await client.post(
        f"{tab}/keys/import",
        data={
            "csrf": csrf_of(page.text),
            "public_key": public_pem.decode(),
            "activation": "pending",
            "request_id": "import-1",
        },
    )
    assert shown.status_code == 200
    assert "BEGIN PRIVATE KEY" not in shown.text
    found = re.search(r'<textarea id="challenge"[^>]*>([^<]+)</textarea>', shown.text)
    assert found
    ring = Keyring()
    ring.add(private)
    answer = Decryptor(ring).open_challenge(html.unescape(found.group(1)))
    confirmed = await client.post(
        f"{tab}/keys/confirm",
        data={"csrf": csrf_of(shown.text), "version": "1", "challenge_plaintext": answer},
        follow_redirects=True,
    )
    assert f"Key {destination_id}.v1 confirmed" in confirmed.text
    assert "imported" in confirmed.text


async def test_the_audit_log_pages_and_filters(
    stack: ConsoleStack, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages follow one another in sequence order through a form (filters stay in the body);
    a filter narrows the records; a malformed time is a message, not an error page."""
    monkeypatch.setattr(audit, "PAGE_SIZE", 2)
    workspace_id, _ = await workspace(stack)
    await sign_in(client, stack.secrets.admin_token("dana"))
    here = f"/w/{workspace_id}/audit"

    async def settled() -> bool:
        first = await client.get(here)
        return (
            "Destination Created"
            in (
                await client.post(
                    here, data={"csrf": csrf_of(first.text), "event_type": "Destination Created"}
                )
            ).text
        )

    await eventually(settled, timeout=20)
    first = await client.get(here)
    token = re.search(r'name="page_token" value="([^"]+)"', first.text)
    assert token
    second = await client.post(
        here, data={"csrf": csrf_of(first.text), "page_token": html.unescape(token.group(1))}
    )
    one, two = SEQUENCES.findall(first.text), SEQUENCES.findall(second.text)
    assert (len(one), len(two)) == (2, 2)
    assert [int(s) for s in one + two] == sorted(int(s) for s in one + two)
    narrowed = await client.post(
        here, data={"csrf": csrf_of(first.text), "event_type": "Workspace Created"}
    )
    assert len(SEQUENCES.findall(narrowed.text)) == 1
    assert "Workspace HIPAA Eligibility Modified" not in narrowed.text
    bad = await client.post(here, data={"csrf": csrf_of(first.text), "start": "yesterday"})
    assert bad.status_code == 400
    assert "is not a time: use YYYY-MM-DDTHH:MM (UTC)" in html.unescape(bad.text)
