"""The whole product as a customer meets it: all four services, from an empty workspace to
decrypted events and a verified audit log.

policysvc and keysvc relay their audit outboxes to auditsvc; encryptsvc follows policysvc and
keysvc. The customer keeps only what keysvc delivered (a PEM, one of them passphrase-protected)
and decrypts with the kit and, independently, with jwcrypto.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from jwcrypto import jwe, jwk
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from phiseal.keys.v1 import keys_pb2

from phiseal_decrypt import Decryptor, Keyring, WrongKey, looks_like_jwe
from phiseal_dev.testing import eventually
from services.common.fieldpath import find, parse_selection
from tests.auditsvc.helpers import whole_log
from tests.conftest import StartService
from tests.encryptsvc.stack import (
    PERSON,
    RSA_2048,
    SAMPLE_LINES,
    SAMPLES,
    X25519,
    Admin,
    wait_serving,
)

# Ten fields: nested objects, an array, a number, a boolean, the long note.
FIELDS = [
    "context.traits.email",
    "properties.allergy[*]",
    "properties.copay",
    "properties.diagnosis",
    "properties.medication",
    "properties.notes",
    "traits.address",
    "traits.birthdate",
    "traits.email",
    "traits.verified",
]
PASSPHRASE = "Harbour seals 7 at dawn"


def _jose_open(event: dict[str, Any], key: jwk.JWK) -> dict[str, Any]:
    """Every JWE string anywhere in ``event`` decrypted with jwcrypto and ``key`` alone."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and looks_like_jwe(node):
            token = jwe.JWE()
            token.deserialize(node, key=key)
            return orjson.loads(token.payload)
        return node

    return walk(event)  # type: ignore[no-any-return]


def _phi_values() -> set[str]:
    """The sample events' values at the encrypted paths that could be recognised in text."""
    values: set[str] = set()
    for event in SAMPLES:
        for path in parse_selection(FIELDS):
            for loc in find(event, path):
                value = loc.container[loc.key]  # type: ignore[index]
                leaves = value.values() if isinstance(value, dict) else [value]
                values.update(v for v in leaves if isinstance(v, str) and len(v) >= 5)
    return values


async def _encrypt(
    stub: encrypt_pb2_grpc.EncryptServiceStub, destination_id: str
) -> encrypt_pb2.EncryptEventsResponse:
    request = encrypt_pb2.EncryptEventsRequest(destination_id=destination_id, events=SAMPLE_LINES)
    return await stub.EncryptEvents(request, timeout=30)


async def _audit_log(
    audit: audit_pb2_grpc.AuditServiceStub, workspace_id: str
) -> list[audit_pb2.AuditRecord]:
    return await whole_log(
        audit, audit_pb2.AuditFilter(workspace_id=workspace_id), "end-to-end test", PERSON
    )


@pytest.mark.slow
async def test_customer_flow_end_to_end(start: StartService, tmp_path: Path) -> None:
    """Workspace → HIPAA → destinations → keys → policy → EncryptEvents → decrypt (kit and
    jwcrypto) → rotation → an audit log holding each action once, no PHI, a valid chain."""
    auditsvc = await start(
        "auditsvc",
        AUDITSVC_SIGNING_KEY_FILE=str(tmp_path / "signing.pem"),
        AUDITSVC_CHECKPOINT_INTERVAL_SECONDS="3600",
    )
    relay = {"AUDITSVC_ADDR": auditsvc.peer_address, "OUTBOX_POLL_SECONDS": "0.2"}
    policysvc = await start("policysvc", **relay)
    keysvc = await start("keysvc", POLICYSVC_ADDR=policysvc.peer_address, **relay)
    encryptsvc = await start(
        "encryptsvc",
        POLICYSVC_ADDR=policysvc.peer_address,
        KEYSVC_ADDR=keysvc.peer_address,
        ENCRYPTSVC_MAX_STALENESS_SECONDS="2",
    )
    await wait_serving(encryptsvc.channel())
    admin = Admin(policysvc.channel(), keysvc.channel())
    encrypt = encrypt_pb2_grpc.EncryptServiceStub(encryptsvc.peer_channel("producer"))

    # The customer sets up: a HIPAA-eligible workspace, fields reclassified yellow, two
    # cloud-mode destinations, one X25519 key and one passphrase-protected RSA key.
    workspace_id = await admin.workspace("Acme Clinic")
    await admin.make_yellow(workspace_id, FIELDS)
    x_dest = await admin.destination(workspace_id, "Analytics webhook")
    rsa_dest = await admin.destination(workspace_id, "CRM webhook")
    x_reply = await admin.keys.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=x_dest, algorithm=X25519), metadata=PERSON
    )
    rsa_reply = await admin.keys.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(
            destination_id=rsa_dest, algorithm=RSA_2048, passphrase=PASSPHRASE
        ),
        metadata=PERSON,
    )
    assert rsa_reply.private_key.passphrase_protected
    x_pem, rsa_pem = tmp_path / "x.v1.pem", tmp_path / "rsa.v1.pem"
    x_pem.write_text(x_reply.private_key.private_key_pem)
    rsa_pem.write_text(rsa_reply.private_key.private_key_pem)
    for destination_id in (x_dest, rsa_dest):
        await admin.enable(destination_id, FIELDS)

    # Events go out encrypted; the private key alone gives back exactly what went in.
    x_out = await _encrypt(encrypt, x_dest)
    rsa_out = await _encrypt(encrypt, rsa_dest)
    assert (x_out.kid, rsa_out.kid) == (f"{x_dest}.v1", f"{rsa_dest}.v1")
    x_key = jwk.JWK.from_pem(x_pem.read_bytes())
    rsa_key = jwk.JWK.from_pem(rsa_pem.read_bytes(), password=PASSPHRASE.encode())
    x_kit = Decryptor(Keyring.from_files([x_pem]))
    rsa_kit = Decryptor(Keyring.from_files([rsa_pem], passphrase=PASSPHRASE.encode()))
    for reply, kit, key in ((x_out, x_kit, x_key), (rsa_out, rsa_kit, rsa_key)):
        assert sum(r.encrypted_fields for r in reply.results) >= 4 * len(SAMPLES)
        sealed = [orjson.loads(r.event) for r in reply.results]
        assert [kit.decrypt_event(e) for e in sealed] == SAMPLES
        assert [_jose_open(e, key) for e in sealed] == SAMPLES
        assert sealed != SAMPLES

    # Rotation: new batches use v2; what went out before opens with the old key only.
    rotated = await admin.keys.RegenerateKeyPair(
        keys_pb2.RegenerateKeyPairRequest(
            destination_id=x_dest, activation=keys_pb2.ACTIVATION_IMMEDIATE
        ),
        metadata=PERSON,
    )
    x2_pem = tmp_path / "x.v2.pem"
    x2_pem.write_text(rotated.private_key.private_key_pem)

    async def uses_v2() -> bool:
        return (await _encrypt(encrypt, x_dest)).kid == f"{x_dest}.v2"

    await eventually(uses_v2, timeout=10)
    x2_out = await _encrypt(encrypt, x_dest)
    new_only = Decryptor(Keyring.from_files([x2_pem]))
    assert [new_only.decrypt_event(orjson.loads(r.event)) for r in x2_out.results] == SAMPLES
    old_only = Decryptor(Keyring.from_files([x_pem]))
    assert [old_only.decrypt_event(orjson.loads(r.event)) for r in x_out.results] == SAMPLES
    with pytest.raises(WrongKey):
        new_only.decrypt_event(orjson.loads(x_out.results[0].event))
    with pytest.raises(WrongKey):
        old_only.decrypt_event(orjson.loads(x2_out.results[0].event))

    # The audit log: every action once (the relays deliver at least once; auditsvc dedups),
    # no PHI value anywhere in it, and an intact hash chain.
    audit = audit_pb2_grpc.AuditServiceStub(auditsvc.channel())
    expected = Counter(
        {
            ("Workspace Created", ""): 1,
            ("Workspace HIPAA Eligibility Modified", ""): 1,
            ("Destination Created", x_dest): 1,
            ("Destination Created", rsa_dest): 1,
            ("Destination Encryption Keys Generated", x_dest): 1,
            ("Destination Encryption Keys Generated", rsa_dest): 1,
            ("Destination Encryption Enabled", x_dest): 1,
            ("Destination Encryption Enabled", rsa_dest): 1,
            ("Destination Encryption Keys Regenerated", x_dest): 1,
        }
    )

    def actions(records: list[audit_pb2.AuditRecord]) -> Counter[tuple[str, str]]:
        found: Counter[tuple[str, str]] = Counter()
        for record in records:
            event = record.event
            about = next((d for d in (x_dest, rsa_dest) if d in event.target), "")
            if (event.event_type, about) in expected:
                found[(event.event_type, about)] += 1
        return found

    async def all_recorded() -> list[audit_pb2.AuditRecord] | None:
        records = await _audit_log(audit, workspace_id)
        assert expected == actions(records)
        return records

    records = await eventually(all_recorded, timeout=30) or []
    assert len(records) == len({r.event.event_id for r in records})
    text = "\n".join(json_format.MessageToJson(r) for r in records)
    leaked = sorted(v for v in _phi_values() if v in text)
    assert leaked == []
    verdict = await audit.VerifyChain(
        audit_pb2.VerifyChainRequest(workspace_id=workspace_id), metadata=PERSON
    )
    assert verdict.ok
    assert verdict.records_checked >= records[-1].sequence
