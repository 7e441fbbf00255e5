"""`make demo`: the whole story against the stack `make run` started, told in the terminal.

A HIPAA-eligible workspace, a destination, a key pair (the private key saved owner-only under
``<PHISEAL_RUN_DIR>/keys``), a policy on yellow fields, sample events encrypted beside their
originals and decrypted again, the key rotated (new batches name ``.v2``, old ciphertext still
opens with the old key), and the audit trail read and its chain verified. It reads the same
settings as ``make run`` (``PHISEAL_RUN_DIR``, ``<SVC>_PORT``, ``<SVC>_PEER_PORT``) and exits
non-zero at the first step that does not do what it says.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from phiseal.common.v1 import common_pb2
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_decrypt.core import Decryptor, Keyring, WrongKey
from phiseal_dev.devstack import ADMIN_TOKEN, ROOT, SERVICES, Service, configured
from phiseal_dev.tokens import DevSigningKey
from services.common.security.tls import TlsFiles, channel_credentials, write_private
from services.common.server.config import ConfigError, Env

SAMPLES = ROOT / "tests" / "data" / "sample_events.jsonl"
# Yellow by default except properties.copay, which the demo reclassifies first.
FIELDS = (
    "traits.email",
    "traits.birthdate",
    "properties.diagnosis",
    "properties.allergy[*]",
    "properties.copay",
)
SHOWN = ("traits.email", "traits.birthdate", "properties.diagnosis", "properties.copay")
ACTOR = "demo@acme.example"


class DemoFailed(Exception):
    """A step did not do what the demo says it does."""


def step(number: int, title: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}{number}. {title}{plain}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)


def at(event: Mapping[str, Any], path: str) -> Any:
    node: Any = event
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def short(value: Any, width: int = 46) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else f"{text[: width - 12]}…{text[-10:]}"


class Stack:
    """Channels to the running stack: a person with a token, the producer with its certificate."""

    def __init__(self, secrets: Path, services: Mapping[str, Service]) -> None:
        ca = (secrets / "ca.pem").read_bytes()
        key = DevSigningKey(secrets)
        # A person of our own, so the audit trail names the demo rather than dev-admin.
        token = key.minter().mint(ACTOR, {"*": ["admin", "auditor"]}, ttl_seconds=3600)
        person = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=ca),
            grpc.access_token_call_credentials(token),
        )
        self.channels = [
            grpc.aio.secure_channel(f"localhost:{services['policysvc'].port}", person),
            grpc.aio.secure_channel(f"localhost:{services['keysvc'].port}", person),
            grpc.aio.secure_channel(f"localhost:{services['auditsvc'].port}", person),
            grpc.aio.secure_channel(
                f"localhost:{services['encryptsvc'].peer_port}",
                channel_credentials(TlsFiles.in_dir(secrets, "producer")),
            ),
        ]
        self.policy = policy_pb2_grpc.PolicyServiceStub(self.channels[0])
        self.keys = keys_pb2_grpc.KeyServiceStub(self.channels[1])
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channels[2])
        self.encrypt = encrypt_pb2_grpc.EncryptServiceStub(self.channels[3])

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)


async def encrypt(
    stack: Stack, destination_id: str, events: Sequence[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    reply = await stack.encrypt.EncryptEvents(
        encrypt_pb2.EncryptEventsRequest(
            destination_id=destination_id, events=[json.dumps(e).encode() for e in events]
        ),
        timeout=10,
    )
    errors = [r.error.message for r in reply.results if r.WhichOneof("result") == "error"]
    expect(not errors, f"events were refused: {errors}")
    return reply.kid, [json.loads(r.event) for r in reply.results]


async def story(stack: Stack, keys_dir: Path) -> None:
    events = [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()][:4]

    step(1, "A workspace, marked HIPAA eligible (only those may encrypt)")
    created = await stack.policy.CreateWorkspace(
        policy_pb2.CreateWorkspaceRequest(name=f"Acme Clinic (demo {time.strftime('%H:%M:%S')})")
    )
    ws = created.workspace.workspace_id
    await stack.policy.SetHipaaEligibility(
        policy_pb2.SetHipaaEligibilityRequest(
            workspace_id=ws, eligible=True, baa_reference="BAA-DEMO-001"
        )
    )
    say(f"workspace {ws}: HIPAA eligible under BAA-DEMO-001")

    step(2, "A cloud-mode destination")
    destination = await stack.policy.CreateDestination(
        policy_pb2.CreateDestinationRequest(
            workspace_id=ws,
            name="CRM webhook",
            type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
        )
    )
    dst = destination.destination.destination_id
    say(f"destination {dst} (event stream, cloud mode)")

    step(3, "Only yellow fields may be encrypted: how ours classify")
    await stack.policy.SetClassification(
        policy_pb2.SetClassificationRequest(
            workspace_id=ws,
            override=policy_pb2.PathOverride(
                path="properties.copay", classification=policy_pb2.CLASSIFICATION_YELLOW
            ),
        )
    )
    listed = await stack.policy.ListClassifications(
        policy_pb2.ListClassificationsRequest(workspace_id=ws, paths=list(FIELDS))
    )
    for field in listed.fields:
        colour = policy_pb2.Classification.Name(field.classification).removeprefix(
            "CLASSIFICATION_"
        )
        say(f"{field.path:<24} {colour.lower()}")
    expect(
        all(f.classification == policy_pb2.CLASSIFICATION_YELLOW for f in listed.fields),
        "every field the policy names must be yellow",
    )

    step(4, "A key pair: the private key is delivered once, and kept owner-only")
    generated = await stack.keys.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(
            destination_id=dst, algorithm=common_pb2.KEY_ALGORITHM_RSA_2048
        )
    )
    v1 = keys_dir / f"{dst}.v1.pem"
    write_private(v1, generated.private_key.private_key_pem.encode())
    mode = v1.stat().st_mode & 0o777
    expect(mode == 0o600, f"{v1} has mode {mode:o}, not 600")
    say(f"kid {generated.key.kid}; private key saved to {v1} (mode {mode:o})")

    step(5, "A policy: encrypt these yellow fields for this destination")
    enabled = await stack.policy.EnableEncryption(
        policy_pb2.EnableEncryptionRequest(destination_id=dst, fields=list(FIELDS))
    )
    say(f"policy version {enabled.policy.version}: {', '.join(enabled.policy.fields)}")

    step(6, "The event pipeline encrypts a batch (client certificate `producer`)")
    kid1, sealed = await encrypt(stack, dst, events)
    say(f"one batch, one key: kid {kid1}")
    for original, out in zip(events, sealed, strict=True):
        for path in SHOWN:
            if at(original, path) is not None:
                say(f"{path:<22} {short(at(original, path), 24):<26} → {short(at(out, path))}")
    plain = [
        p
        for e, out in zip(events, sealed, strict=True)
        for p in SHOWN
        if at(e, p) is not None and not str(at(out, p)).startswith("eyJ")
    ]
    expect(not plain, f"named fields left without ciphertext: {plain}")

    step(7, "The customer decrypts with the private key alone (phiseal_decrypt)")
    ring = Keyring.from_files([v1])
    opened = [Decryptor(ring).decrypt_event(e, destination_id=dst) for e in sealed]
    expect(opened == events, "decryption did not give back the original events")
    say(f"{len(opened)} events decrypted; every value equals the original, types included")

    step(8, "Rotate the key: new batches name .v2, old ciphertext still opens with v1")
    rotated = await stack.keys.RegenerateKeyPair(
        keys_pb2.RegenerateKeyPairRequest(
            destination_id=dst, activation=keys_pb2.ACTIVATION_IMMEDIATE
        )
    )
    v2 = keys_dir / f"{dst}.v2.pem"
    write_private(v2, rotated.private_key.private_key_pem.encode())
    say(f"kid {rotated.key.kid}; private key saved to {v2}")
    # encryptsvc learns of the rotation from its WatchKeys stream, within the staleness bound.
    deadline = time.monotonic() + 30
    kid2, resealed = kid1, sealed
    while kid2 == kid1:
        expect(time.monotonic() < deadline, "encryptsvc still encrypts under v1 after 30 s")
        await asyncio.sleep(0.2)
        kid2, resealed = await encrypt(stack, dst, events)
    expect(kid2.endswith(".v2"), f"the new batch names {kid2}, not .v2")
    say(f"the next batch names kid {kid2}")
    expect(
        [Decryptor(Keyring.from_files([v1])).decrypt_event(e) for e in sealed] == events,
        "the v1 key no longer opens what was sent before the rotation",
    )
    say("key v1 still opens the batch sent before the rotation")
    try:
        Decryptor(Keyring.from_files([v1])).decrypt_event(resealed[0])
    except WrongKey:
        say("key v1 does not open the new batch (as it should not)")
    else:
        raise DemoFailed("the old key opened a batch encrypted after the rotation")
    both = Decryptor(Keyring.from_files([v1, v2]))
    expect([both.decrypt_event(e) for e in resealed] == events, "key v2 does not open .v2")
    say("key v2 opens it")

    step(9, "The audit trail: who did what, hash-chained and verified")
    wanted = {
        "Workspace HIPAA Eligibility Modified",
        "Destination Encryption Keys Generated",
        "Destination Encryption Keys Regenerated",
    }
    records: list[audit_pb2.AuditRecord] = []
    deadline = time.monotonic() + 30
    # keysvc and policysvc deliver their records through the outbox, at least once, shortly.
    while not wanted <= {r.event.event_type for r in records}:
        expect(time.monotonic() < deadline, "the audit records did not arrive within 30 s")
        await asyncio.sleep(0.3)
        page = await stack.audit.QueryEvents(
            audit_pb2.QueryEventsRequest(
                filter=audit_pb2.AuditFilter(workspace_id=ws), access_reason="make demo"
            )
        )
        records = list(page.records)
    for record in records:
        event = record.event
        say(f"#{record.sequence:<3} {event.event_type:<42} by {event.actor_user_id}")
    verdict = await stack.audit.VerifyChain(audit_pb2.VerifyChainRequest(workspace_id=ws))
    expect(verdict.ok, f"the chain does not verify: {verdict.first_problem.reason}")
    say(f"chain verified: {verdict.records_checked} records, no gap, no edit")


async def run(environ: Mapping[str, str]) -> int:
    env = Env(environ)
    run_dir = Path(env.text("PHISEAL_RUN_DIR", str(ROOT / ".run")))
    services = {s.name: configured(s, env) for s in SERVICES}
    secrets = run_dir / "dev-secrets"
    if not (secrets / ADMIN_TOKEN).exists():
        print(f"demo: no stack secrets in {secrets}: start the stack with `make run` first")
        return 2
    keys_dir = run_dir / "keys"
    print("PHIseal, end to end: events leave with their PHI fields sealed to your key.")
    stack = Stack(secrets, services)
    try:
        await story(stack, keys_dir)
    except grpc.aio.AioRpcError as exc:
        print(f"\ndemo failed: {exc.code().name}: {exc.details()}")
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            print("is the stack running (`make run`) with the same ports and PHISEAL_RUN_DIR?")
        return 1
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}")
        return 1
    finally:
        await stack.close()
    print(f"\nDone. The private keys are in {keys_dir} (owner-only; remove them when done).")
    print(f"Metrics: http://localhost:{services['encryptsvc'].metrics_port}/metrics (encryptsvc)")
    return 0


def main() -> None:
    try:
        code = asyncio.run(run(os.environ))
    except ConfigError as exc:
        print(f"demo: configuration error: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


if __name__ == "__main__":
    main()
