"""The console end to end in a real browser, against the four real services: the reference
product's privacy-officer flow, from sign-in to an exported audit log naming the person."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from playwright.async_api import BrowserContext, Page, expect

from phiseal_decrypt import Decryptor, Keyring
from phiseal_dev.testing import eventually
from tests.console.screens import shoot
from tests.console.stack import ConsoleStack
from tests.encryptsvc.stack import SAMPLE_LINES, SAMPLES

ACTOR = "dev-admin"
YELLOW = [
    "context.traits.email",
    "properties.diagnosis",
    "properties.medication",
    "traits.birthdate",
    "traits.email",
]
BAA = "BAA-2026-001"


async def _submit(page: Page, form: str, button: str) -> None:
    await page.locator(form).get_by_role("button", name=button).click()
    await page.wait_for_load_state()


async def _override(page: Page, path: str, klass: str) -> None:
    form = page.locator("form:has(#path)")
    await form.locator("#path").fill(path)
    await form.locator("#classification").select_option(klass)
    await _submit(page, "form:has(#path)", "Save override")
    await expect(page.locator(".flash.ok")).to_contain_text(f"{path} is now {klass}")


async def _download(page: Page, button: str, to: Path) -> str:
    async with page.expect_download() as info:
        await page.get_by_role("button", name=button).click()
    download = await info.value
    await download.save_as(to)
    return await asyncio.to_thread(to.read_text)


async def _kit(*args: str) -> str:
    """The customer's kit, as a command."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phiseal_decrypt.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def _encrypt(stack: ConsoleStack, destination_id: str) -> encrypt_pb2.EncryptEventsResponse:
    """The event pipeline: EncryptEvents on the peer port with the producer certificate."""
    stub = encrypt_pb2_grpc.EncryptServiceStub(stack.encryptsvc.peer_channel("producer"))
    request = encrypt_pb2.EncryptEventsRequest(destination_id=destination_id, events=SAMPLE_LINES)
    return await stub.EncryptEvents(request, timeout=30)


def _phi_values() -> set[str]:
    values: set[str] = set()
    for event in SAMPLES:
        for section in ("traits", "properties"):
            for key in ("email", "diagnosis", "medication", "birthdate"):
                value = event.get(section, {}).get(key)
                if isinstance(value, str) and len(value) >= 5:
                    values.add(value)
    return values


@pytest.mark.slow
async def test_privacy_officer_flow(
    stack: ConsoleStack, context: BrowserContext, tmp_path: Path
) -> None:
    """Sign in → HIPAA-eligible workspace → destinations → fields → keys (private key
    downloaded once) → events encrypted by the producer open with that key → regenerate with
    confirmation → turn off after the confirmation → the audit log, exported, names the person
    for every step; each screen photographed."""
    page = await context.new_page()
    await page.goto(stack.url)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await shoot(page, "signin")
    await page.get_by_role("button", name="Development sign-in").click()
    await expect(page.get_by_test_id("subject")).to_have_text(ACTOR)

    # A workspace, made HIPAA eligible with its BAA reference.
    await page.locator("#name").fill("Acme Clinic")
    await _submit(page, "form[action='/workspaces']", "Create workspace")
    workspace_id = page.url.rsplit("/", 1)[1]
    await page.get_by_label("HIPAA eligible (a BAA is signed)").check()
    await page.locator("#baa_reference").fill(BAA)
    await _submit(page, "form:has(#baa_reference)", "Save eligibility")
    await expect(page.get_by_test_id("baa-reference")).to_have_text(BAA)
    await expect(page.get_by_test_id("hipaa-badge")).to_have_text("HIPAA eligible")
    await shoot(page, "workspace")
    await page.goto(f"{stack.url}/workspaces")
    await expect(page.locator("table")).to_contain_text(BAA)
    await shoot(page, "workspaces")

    # Destinations: a warehouse (no encryption, and why) and a cloud-mode webhook.
    await page.goto(f"{stack.url}/w/{workspace_id}/destinations")
    await page.locator("#name").fill("Clinic warehouse")
    await page.locator("#type").select_option(label="Warehouse")
    await _submit(page, "form:has(#type)", "Create destination")
    await expect(page.get_by_test_id("why-not")).to_contain_text("Warehouses are loaded in bulk")
    await shoot(page, "destination-not-encryptable")
    await page.goto(f"{stack.url}/w/{workspace_id}/destinations")
    await page.locator("#name").fill("Analytics webhook")
    await page.locator("#type").select_option(label="Event stream, cloud mode")
    await _submit(page, "form:has(#type)", "Create destination")
    destination_id = page.url.rsplit("/", 1)[1]
    tab = page.url
    await page.goto(f"{stack.url}/w/{workspace_id}/destinations")
    await expect(page.locator("table")).to_contain_text("not available")
    await shoot(page, "destinations")

    # Classification: the fields to encrypt yellow, one red, one green, a custom matcher.
    await page.goto(f"{stack.url}/w/{workspace_id}/classification")
    for path in YELLOW:
        await _override(page, path, "yellow")
    await _override(page, "traits.ssn", "red")
    await _override(page, "properties.clinic", "green")
    await page.locator("#m-name").fill("member number")
    await page.locator("#m-pattern").fill("member_no")
    await _submit(page, "form:has(#m-name)", "Add matcher")
    await expect(page.get_by_test_id("matchers")).to_contain_text("member number")
    await shoot(page, "classification")

    # The Data Encryption tab: only yellow fields can be picked; the others say why.
    await page.goto(tab)
    picker = page.get_by_test_id("field-picker")
    red_row = picker.locator("tr", has_text="traits.ssn")
    await expect(red_row.locator("input[type=checkbox]")).to_have_count(0)
    await expect(red_row.get_by_role("link", name="Reclassify")).to_have_attribute(
        "href", f"/w/{workspace_id}/classification#field-traits.ssn"
    )
    await expect(picker.locator("tr", has_text="properties.clinic")).to_contain_text("green")
    assert await picker.locator("input[name=field]").count() == len(YELLOW)
    await page.locator("#enabled").check()
    for path in YELLOW:
        await picker.locator(f"input[value='{path}']").check()
    await _submit(page, "form[action$='/policy']", "Save encryption settings")
    await expect(page.locator(".flash.ok")).to_contain_text("Policy version 1 saved: enabled")
    await shoot(page, "data-encryption")

    # Generate Encryption Keys: the private key is shown once and downloaded as a file.
    await page.locator("#algorithm-g").select_option(label="X25519 (ECDH-ES+A256KW)")
    await _submit(page, "form[action$='/keys/generate']", "Generate Encryption Keys")
    await expect(page.get_by_test_id("private-key")).to_contain_text(
        "This is the only time this private key is shown"
    )
    await shoot(page, "private-key")
    v1_pem = await _download(page, "Download private key", tmp_path / "v1.pem")
    assert v1_pem == await page.locator("#private-key-pem").input_value()
    assert v1_pem.startswith("-----BEGIN PRIVATE KEY-----")

    # The producer's events leave encrypted; the downloaded key alone opens them.
    async def sealed_v1() -> bool:
        reply = await _encrypt(stack, destination_id)
        return reply.encryption_enabled and reply.kid == f"{destination_id}.v1"

    await eventually(sealed_v1, timeout=20)
    reply = await _encrypt(stack, destination_id)
    sealed = [orjson.loads(r.event) for r in reply.results]
    assert sealed != SAMPLES
    assert sum(r.encrypted_fields for r in reply.results) >= len(SAMPLES)
    kit = Decryptor(Keyring.from_files([tmp_path / "v1.pem"]))
    assert [kit.decrypt_event(e) for e in sealed] == SAMPLES
    (tmp_path / "sealed.json").write_bytes(orjson.dumps(sealed[0]))
    opened = await _kit("--key", str(tmp_path / "v1.pem"), "event", str(tmp_path / "sealed.json"))
    assert orjson.loads(opened) == SAMPLES[0]

    # Regenerate, pending until confirmed: the kit opens the challenge, the answer confirms.
    await page.goto(tab)
    regenerate = page.locator("form[action$='/keys/regenerate']")
    await regenerate.locator("input[value=pending]").check()
    await _submit(page, "form[action$='/keys/regenerate']", "Regenerate")
    await expect(page.get_by_test_id("challenge")).to_contain_text("stays pending")
    await shoot(page, "regenerate-challenge")
    await _download(page, "Download private key", tmp_path / "v2.pem")
    challenge = await page.locator("#challenge").input_value()
    answer = await _kit("--key", str(tmp_path / "v2.pem"), "challenge", challenge)
    await page.locator("#challenge_plaintext").fill(answer)
    await _submit(page, "[data-testid=challenge] form", "Confirm key")
    await expect(page.locator(".flash.ok")).to_contain_text(f"Key {destination_id}.v2 confirmed")
    versions = page.get_by_test_id("key-versions")
    await expect(versions.locator("tr", has_text=f"{destination_id}.v2")).to_contain_text("active")
    await expect(versions.locator("tr", has_text=f"{destination_id}.v1")).to_contain_text("retired")
    await shoot(page, "key-versions")

    # Turning encryption off asks first, naming the destination.
    await page.locator("#enabled").uncheck()
    await _submit(page, "form[action$='/policy']", "Save encryption settings")
    await expect(page.get_by_role("heading", name="Turn off data encryption?")).to_be_visible()
    await expect(page.locator("main")).to_contain_text(destination_id)
    await shoot(page, "turn-off")
    await page.get_by_role("button", name="Turn off data encryption").click()
    await expect(page.locator(".flash.ok")).to_contain_text("Data encryption is off")
    await expect(page.get_by_test_id("policy-versions")).to_contain_text("disabled")
    await page.get_by_test_id("policy-versions").scroll_into_view_if_needed()
    await shoot(page, "policy-versions")

    async def plaintext_again() -> bool:
        return not (await _encrypt(stack, destination_id)).encryption_enabled

    await eventually(plaintext_again, timeout=20)

    # The audit log: every step under the person's name, the chain verified, an export.
    expected = {
        "Workspace Created",
        "Workspace HIPAA Eligibility Modified",
        "Destination Created",
        "Privacy Classification Modified",
        "Privacy Matcher Added",
        "Destination Encryption Enabled",
        "Destination Encryption Keys Generated",
        "Destination Encryption Keys Regenerated",
        "Destination Encryption Key Confirmed",
        "Destination Encryption Disabled",
    }
    audit = f"{stack.url}/w/{workspace_id}/audit"

    async def everything_recorded() -> bool:
        await page.goto(audit)
        await page.locator("input[name=actor]").fill(ACTOR)
        await _submit(page, "form.filters", "Filter")
        rows = await page.get_by_test_id("audit-records").locator("tbody tr").all_inner_texts()
        return expected <= {t.split("\t")[2] for t in rows if t.count("\t") >= 3}

    await eventually(everything_recorded, timeout=30)
    await expect(page.get_by_test_id("chain-status")).to_contain_text("Chain verified")
    await shoot(page, "audit-log", full_page=False)
    async with page.expect_download() as info:
        await page.locator("#export").click()
    export = await info.value
    await export.save_as(tmp_path / "audit.jsonl")
    lines = [orjson.loads(x) for x in (tmp_path / "audit.jsonl").read_bytes().splitlines() if x]
    mine = [line for line in lines if line.get("type") == "record"]
    assert expected <= {e["event_type"] for e in mine}
    assert {e["actor_user_id"] for e in mine} == {ACTOR}
    exported = (tmp_path / "audit.jsonl").read_text()
    assert sorted(v for v in _phi_values() if v in exported) == []

    # A service's refusal reads as its message, never a stack trace.
    await page.goto(f"{stack.url}/w/{workspace_id}/d/dst_does_not_exist")
    message = page.get_by_test_id("error-message")
    await expect(message).to_contain_text("Not found")
    assert "Traceback" not in await page.content()
    await shoot(page, "error")
    health = await page.request.get(f"{stack.url}/healthz")
    assert (await health.json())["status"] == "SERVING"
