"""A destination's Data Encryption tab: the policy and its field picker, keys, versions, and
the "Turn off data encryption?" confirmation.

A private key passes through the console exactly once, in the response to the form that made
it: it is rendered into that no-store page and nowhere else (no cookie, no log line, no URL).
"""

from __future__ import annotations

import secrets

from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2
from phiseal.policy.v1 import policy_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console import labels, picker
from services.console.clients import Calls
from services.console.web import Page, form_action, text, url

ACTIVATIONS = {
    "immediate": keys_pb2.ACTIVATION_IMMEDIATE,
    "pending": keys_pb2.ACTIVATION_AFTER_CONFIRMATION,
}
KDFS = {
    "scrypt": keys_pb2.PASSPHRASE_KDF_SCRYPT,
    "pbkdf2": keys_pb2.PASSPHRASE_KDF_PBKDF2_SHA256,
}


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["ws"], request.path_params["dst"]


def _tab(request: Request) -> str:
    workspace_id, destination_id = _ids(request)
    return url("w", workspace_id, "d", destination_id)


def _number(form: FormData, name: str) -> int:
    raw = text(form, name, 20)
    return int(raw) if raw.isdigit() else 0


async def _policy(calls: Calls, destination_id: str) -> policy_pb2.EncryptionPolicy:
    reply = await calls.policy.GetPolicy(
        policy_pb2.GetPolicyRequest(destination_id=destination_id),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return reply.policy


async def encryption_tab(request: Request) -> Response:
    page = Page.load(request)
    workspace_id, destination_id = _ids(request)
    calls = page.calls
    md, timeout = calls.metadata, calls.timeout
    ws = await calls.policy.GetWorkspace(
        policy_pb2.GetWorkspaceRequest(workspace_id=workspace_id), metadata=md, timeout=timeout
    )
    dst = await calls.policy.GetDestination(
        policy_pb2.GetDestinationRequest(destination_id=destination_id),
        metadata=md,
        timeout=timeout,
    )
    if dst.destination.workspace_id != workspace_id:
        return page.redirect(url("w", dst.destination.workspace_id, "d", destination_id))
    policy = await _policy(calls, destination_id)
    cloud = dst.destination.type == labels.CLOUD_MODE
    keys: list[keys_pb2.KeyVersion] = []
    rows: list[picker.PickerRow] = []
    problems = list(dst.encryption_problems)
    versions: list[policy_pb2.EncryptionPolicy] = []
    if cloud:
        keys = list(
            (
                await calls.keys.ListKeyVersions(
                    keys_pb2.ListKeyVersionsRequest(destination_id=destination_id),
                    metadata=md,
                    timeout=timeout,
                )
            ).versions
        )
        listing = await calls.policy.ListSelectableFields(
            policy_pb2.ListSelectableFieldsRequest(
                destination_id=destination_id,
                paths=list(policy.fields),
                page=common_pb2.PageRequest(page_size=500),
            ),
            metadata=md,
            timeout=timeout,
        )
        rows = picker.rows(listing)
        problems = list(listing.destination_problems)
        versions = list(
            (
                await calls.policy.ListPolicyVersions(
                    policy_pb2.ListPolicyVersionsRequest(
                        destination_id=destination_id, page=common_pb2.PageRequest(page_size=50)
                    ),
                    metadata=md,
                    timeout=timeout,
                )
            ).versions
        )
    return page.render(
        "encryption.html",
        ws=ws.workspace,
        dst=dst.destination,
        tab="destinations",
        policy=policy,
        cloud=cloud,
        why_not=labels.WHY_NO_ENCRYPTION.get(dst.destination.type, ""),
        problems=problems,
        keys=keys,
        has_active=any(k.state == keys_pb2.KEY_STATE_ACTIVE for k in keys),
        pending=[k for k in keys if k.state == keys_pb2.KEY_STATE_PENDING],
        rows=rows,
        versions=versions,
        can_edit=page.can(workspace_id, "editor"),
        can_admin=page.can(workspace_id, "admin"),
        request_id=secrets.token_urlsafe(16),
        labels=labels,
        class_meaning=labels.CLASS_MEANING,
    )


@form_action(_tab)
async def save_policy(page: Page, form: FormData) -> Response:
    """The checkbox and the picked fields: one EnableEncryption with the whole list (it both
    turns encryption on and changes the fields); unticking leads to the confirmation."""
    workspace_id, destination_id = _ids(page.request)
    here = _tab(page.request)
    if text(form, "enabled") != "on":
        policy = await _policy(page.calls, destination_id)
        if policy.enabled:
            return page.redirect(url("w", workspace_id, "d", destination_id, "disable"))
        return page.redirect(here, error="Encryption is off: tick the checkbox to turn it on.")
    fields = sorted({f.strip() for f in form.getlist("field") if isinstance(f, str) and f.strip()})
    fmt = _number(form, "format") or common_pb2.ENCRYPTION_FORMAT_JWE
    calls = page.calls
    reply = await calls.policy.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(
            destination_id=destination_id,
            fields=fields,
            format=fmt,  # type: ignore[arg-type]  # the service refuses an unknown value
            expected_version=_number(form, "expected_version"),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    policy = reply.policy
    return page.redirect(
        here, ok=f"Policy version {policy.version} saved: {policy.change_summary}."
    )


async def disable_confirm(request: Request) -> Response:
    page = Page.load(request)
    workspace_id, destination_id = _ids(request)
    calls = page.calls
    dst = await calls.policy.GetDestination(
        policy_pb2.GetDestinationRequest(destination_id=destination_id),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    policy = await _policy(calls, destination_id)
    return page.render(
        "disable.html",
        ws_id=workspace_id,
        dst=dst.destination,
        policy=policy,
        tab="destinations",
        can_admin=page.can(workspace_id, "admin"),
    )


@form_action(lambda r: url("w", r.path_params["ws"], "d", r.path_params["dst"], "disable"))
async def disable(page: Page, form: FormData) -> Response:
    """policysvc turns encryption off only when the confirmation repeats this destination."""
    _, destination_id = _ids(page.request)
    calls = page.calls
    reply = await calls.policy.DisableEncryption(
        policy_pb2.DisableEncryptionRequest(
            destination_id=destination_id,
            expected_version=_number(form, "expected_version"),
            # The person's answer to "Turn off data encryption?", checked by policysvc too.
            confirm_destination_id=text(form, "confirm_destination_id", 200),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return page.redirect(
        _tab(page.request),
        ok=f"Data encryption is off (policy version {reply.policy.version}). {reply.notice}",
    )


def _delivered(
    page: Page,
    key: keys_pb2.KeyVersion,
    delivery: keys_pb2.PrivateKeyDelivery | None,
    challenge: str = "",
    previous_version: int = 0,
    action: str = "generated",
) -> Response:
    workspace_id, _ = _ids(page.request)
    return page.render(
        "key_delivered.html",
        ws_id=workspace_id,
        key=key,
        delivery=delivery,
        challenge=challenge,
        previous_version=previous_version,
        action=action,
        tab="destinations",
        filename=f"{key.kid}.pem",
        labels=labels,
    )


def _passphrase(form: FormData) -> tuple[str, int]:
    passphrase = text(form, "passphrase", 1000)
    kdf = KDFS.get(text(form, "kdf"), keys_pb2.PASSPHRASE_KDF_UNSPECIFIED) if passphrase else 0
    return passphrase, kdf


@form_action(_tab)
async def generate(page: Page, form: FormData) -> Response:
    _, destination_id = _ids(page.request)
    passphrase, kdf = _passphrase(form)
    calls = page.calls
    reply = await calls.keys.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(
            destination_id=destination_id,
            algorithm=_number(form, "algorithm"),  # type: ignore[arg-type]
            passphrase=passphrase,
            passphrase_kdf=kdf,  # type: ignore[arg-type]
            # From the form: resubmitting it can never deliver a second private key.
            request_id=text(form, "request_id", 100),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return _delivered(page, reply.key, reply.private_key)


@form_action(_tab)
async def regenerate(page: Page, form: FormData) -> Response:
    _, destination_id = _ids(page.request)
    passphrase, kdf = _passphrase(form)
    calls = page.calls
    reply = await calls.keys.RegenerateKeyPair(
        keys_pb2.RegenerateKeyPairRequest(
            destination_id=destination_id,
            algorithm=_number(form, "algorithm"),  # type: ignore[arg-type]
            activation=ACTIVATIONS.get(text(form, "activation"), keys_pb2.ACTIVATION_IMMEDIATE),
            passphrase=passphrase,
            passphrase_kdf=kdf,  # type: ignore[arg-type]
            request_id=text(form, "request_id", 100),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return _delivered(
        page,
        reply.key,
        reply.private_key,
        challenge=reply.challenge,
        previous_version=reply.previous_version,
        action="regenerated",
    )


@form_action(_tab)
async def confirm(page: Page, form: FormData) -> Response:
    _, destination_id = _ids(page.request)
    calls = page.calls
    reply = await calls.keys.ConfirmKey(
        keys_pb2.ConfirmKeyRequest(
            destination_id=destination_id,
            version=_number(form, "version"),
            challenge_plaintext=text(form, "challenge_plaintext", 1000),
        ),
        metadata=calls.metadata,
        timeout=calls.timeout,
    )
    return page.redirect(
        _tab(page.request), ok=f"Key {reply.key.kid} confirmed: it encrypts from now on."
    )


@form_action(_tab)
async def import_key(page: Page, form: FormData) -> Response:
    _, destination_id = _ids(page.request)
    public = text(form, "public_key", 64 * 1024)
    request = keys_pb2.ImportPublicKeyRequest(
        destination_id=destination_id,
        activation=ACTIVATIONS.get(text(form, "activation"), keys_pb2.ACTIVATION_IMMEDIATE),
        request_id=text(form, "request_id", 100),
    )
    if public.startswith("{"):
        request.public_key_jwk = public
    else:
        request.public_key_pem = public
    calls = page.calls
    reply = await calls.keys.ImportPublicKey(
        request, metadata=calls.metadata, timeout=calls.timeout
    )
    if reply.challenge:
        return _delivered(page, reply.key, None, challenge=reply.challenge, action="imported")
    return page.redirect(_tab(page.request), ok=f"Public key {reply.key.kid} imported.")


_D = "/w/{ws}/d/{dst}"
ROUTES = [
    Route(_D, encryption_tab, methods=["GET"]),
    Route(_D + "/policy", save_policy, methods=["POST"]),
    Route(_D + "/disable", disable_confirm, methods=["GET"]),
    Route(_D + "/disable", disable, methods=["POST"]),
    Route(_D + "/keys/generate", generate, methods=["POST"]),
    Route(_D + "/keys/regenerate", regenerate, methods=["POST"]),
    Route(_D + "/keys/confirm", confirm, methods=["POST"]),
    Route(_D + "/keys/import", import_key, methods=["POST"]),
]
