"""Canary values pushed through every path, failing ones included, and looked for everywhere.

Distinctive PHI values (an email, a diagnosis, a phone number), private keys keysvc delivered
(with and without a passphrase) and passphrases (accepted and refused) go through
EncryptEvents, PreviewEncryption, ListClassifications, SetClassification, the key RPCs,
RecordEvents, QueryEvents and ExportEvents. None may appear in an error message sent back, the
application log, the PostgreSQL log, any audit record, the pg_dump of the database or the raw
data directory (WAL included, read after a CHECKPOINT).

One canary is stored on purpose: ``MATCHER``, the pattern of a VALUE matcher. A matcher is
configuration the customer writes (policysvc must keep it to classify), so it is in policysvc's
tables and therefore the dump and data directory; it must still stay out of logs and audit
records (policysvc records the matcher's name and kind, not its pattern). auditsvc stores the
``details`` a peer sends as given (it cannot tell a value from a name), so RecordEvents is
pushed only through its failing paths here; that OUR services never put values in details is
shown by every record they wrote during this test.

A second is recorded on purpose: ``END_USER``, an end user's id given as a QueryEvents /
ExportEvents filter. HIPAA access accounting must say whose records were read, so auditsvc's
"Viewed"/"Exported" record carries it as ``end_user_id`` (an identifier, the field the design
gives audit records for it, not a value from an event); it must stay out of the logs.
"""

from __future__ import annotations

import io
import os
import subprocess
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import orjson
import pytest
from google.protobuf import json_format, struct_pb2
from jwcrypto import jwk
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc
from phiseal.encrypt.v1 import encrypt_pb2, encrypt_pb2_grpc
from phiseal.keys.v1 import keys_pb2, keys_pb2_grpc
from phiseal.policy.v1 import policy_pb2, policy_pb2_grpc

from phiseal_dev.localpg import bin_dir
from phiseal_dev.testing import PgCluster, eventually, person
from services.common.server.logging import configure_logging
from tests.auditsvc.helpers import event, whole_log
from tests.encryptsvc.stack import FIELDS, PERSON, RSA_2048, SEGMENT, X25519, Admin
from tests.secret_search import data_files, flush_to_disk, needles, search
from tests.security.conftest import Stack
from tests.security.world import World

EMAIL = "canary.phi.7f3a@example.invalid"
DX = "CANARY-DX-91b2"
PHONE = "+1-555-0193-7731"
PHI = [EMAIL, DX, PHONE]
PASSPHRASE = "Canary-Passphrase-5e1d!x"
# Refused by keysvc: one kind of character; too few distinct characters.
WEAK = ["canaryweakpassphrasezq", "ZqZqZqZqZqZqZqZq"]
MATCHER = "CANARY-MATCH-3c8e"
# An end user's id used as an audit-log filter: auditsvc records whose records were read.
END_USER = "canary-user-2d9c"
OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def phi_event(n: int) -> dict[str, Any]:
    """A Segment track event carrying the canaries at encrypted and unencrypted paths."""
    return {
        "type": "track",
        "event": "Visit Booked",
        "messageId": f"canary-{n}",
        "userId": "user-canary",
        "context": {"traits": {"email": EMAIL, "phone": PHONE}},
        "traits": {"email": EMAIL},
        "properties": {
            "diagnosis": DX,
            "notes": f"{DX} for {EMAIL}, call {PHONE}",
            "email": EMAIL,
            "free_text": f"{DX} {MATCHER}",  # not in the policy: goes out as it came
        },
    }


def hostile_events() -> list[bytes]:
    """Events that fail per event, each still carrying canaries."""
    return [
        b'{"traits": {"email": "' + EMAIL.encode(),  # truncated JSON
        b'{"traits": {"email": "' + EMAIL.encode() + b'\xff\xfe"}}',  # invalid UTF-8
        orjson.dumps([EMAIL, DX, PHONE]),  # not an object
        ('{"properties": ' * 60 + f'"{DX}"' + "}" * 60).encode(),  # too deep
        orjson.dumps({"messageId": 7, "traits": {"email": EMAIL}}),  # wrong type
        orjson.dumps({"properties": {"notes": DX + "x" * (300 * 1024)}}),  # too large
    ]


async def code(messages: list[str], call: Any) -> grpc.StatusCode:
    """The call's status; an error's message is kept in ``messages`` to search for canaries."""
    try:
        if hasattr(call, "__aiter__"):  # a server stream: read it to its end
            async for _ in call:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        messages.append(exc.details() or "")
        return exc.code()
    return OK


async def drain(stream: Any) -> bytes:
    out = b""
    async for message in stream:
        out += message.chunk
    return out


async def push_everything(stack: Stack, world: World) -> dict[str, Any]:
    """Every path the canaries can take; answers the keys delivered and each call's code."""
    admin = Admin(stack.policy.channel(), stack.keys.channel())
    policy = policy_pb2_grpc.PolicyServiceStub(stack.policy.channel())
    keys = keys_pb2_grpc.KeyServiceStub(stack.keys.channel())
    audit = audit_pb2_grpc.AuditServiceStub(stack.audit.channel())
    producer = encrypt_pb2_grpc.EncryptServiceStub(stack.encrypt.peer_channel("producer"))
    person_encrypt = encrypt_pb2_grpc.EncryptServiceStub(stack.encrypt.channel())
    recorder = audit_pb2_grpc.AuditServiceStub(stack.audit.peer_channel("keysvc"))
    ws = world.workspace_id
    good = [orjson.dumps(phi_event(n)) for n in range(3)]
    codes: dict[str, grpc.StatusCode] = {}
    # Every error message a caller was sent: status details, per-event and per-sample errors.
    messages: list[str] = []

    # Keys: weak passphrases refused, a plain X25519 key and a passphrase-protected RSA key.
    for i, weak in enumerate(WEAK):
        codes[f"GenerateKeyPair weak {i}"] = await code(
            messages,
            keys.GenerateKeyPair(
                keys_pb2.GenerateKeyPairRequest(
                    destination_id=world.fresh_for_generate, passphrase=weak
                ),
                metadata=PERSON,
            ),
        )
        codes[f"RegenerateKeyPair weak {i}"] = await code(
            messages,
            keys.RegenerateKeyPair(
                keys_pb2.RegenerateKeyPairRequest(destination_id=world.with_key, passphrase=weak),
                metadata=PERSON,
            ),
        )
    plain = await keys.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(destination_id=world.fresh_for_generate, algorithm=X25519),
        metadata=PERSON,
    )
    segment_dst = await admin.destination(ws, "segment")
    protected = await keys.GenerateKeyPair(
        keys_pb2.GenerateKeyPairRequest(
            destination_id=segment_dst, algorithm=RSA_2048, passphrase=PASSPHRASE
        ),
        metadata=PERSON,
    )
    await admin.enable(segment_dst, FIELDS, SEGMENT)
    plain_pem = plain.private_key.private_key_pem
    private_jwk = jwk.JWK.from_pem(plain_pem.encode()).export_private()
    for name, sent in {
        "ImportPublicKey private PEM": {"public_key_pem": plain_pem},
        "ImportPublicKey encrypted PEM": {"public_key_pem": protected.private_key.private_key_pem},
        "ImportPublicKey private JWK": {"public_key_jwk": private_jwk},
    }.items():
        codes[name] = await code(
            messages,
            keys.ImportPublicKey(
                keys_pb2.ImportPublicKeyRequest(destination_id=world.fresh_for_import, **sent),
                metadata=PERSON,
            ),
        )
    codes["ConfirmKey wrong answer"] = await code(
        messages,
        keys.ConfirmKey(
            keys_pb2.ConfirmKeyRequest(
                destination_id=world.pending, version=2, challenge_plaintext=EMAIL
            ),
            metadata=PERSON,
        ),
    )

    # Classification: a VALUE matcher whose pattern is a canary; a broken regex one; samples.
    codes["SetClassification value matcher"] = await code(
        messages,
        policy.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=ws,
                add_matcher=policy_pb2.Matcher(
                    name="canary matcher",
                    target=policy_pb2.MATCHER_TARGET_VALUE,
                    kind=policy_pb2.MATCH_KIND_EXACT,
                    pattern=MATCHER,
                    classification=policy_pb2.CLASSIFICATION_RED,
                ),
            ),
            metadata=PERSON,
        ),
    )
    codes["SetClassification broken regex"] = await code(
        messages,
        policy.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=ws,
                add_matcher=policy_pb2.Matcher(
                    name="broken",
                    target=policy_pb2.MATCHER_TARGET_VALUE,
                    kind=policy_pb2.MATCH_KIND_REGEX,
                    pattern=f"({MATCHER}",  # RE2 quotes the unclosed group in its error
                    classification=policy_pb2.CLASSIFICATION_RED,
                ),
            ),
            metadata=PERSON,
        ),
    )
    samples = [g.decode() for g in good]
    codes["ListClassifications samples"] = await code(
        messages,
        policy.ListClassifications(
            policy_pb2.ListClassificationsRequest(workspace_id=ws, sample_events=samples),
            metadata=PERSON,
        ),
    )
    for i, bad in enumerate(hostile_events()):
        codes[f"ListClassifications hostile {i}"] = await code(
            messages,
            policy.ListClassifications(
                policy_pb2.ListClassificationsRequest(
                    workspace_id=ws, sample_events=[bad.decode(errors="replace")]
                ),
                metadata=PERSON,
            ),
        )
    preview = await policy.PreviewEncryption(
        policy_pb2.PreviewEncryptionRequest(
            destination_id=world.main,
            sample_events=samples + [b.decode(errors="replace") for b in hostile_events()],
        ),
        metadata=PERSON,
    )
    codes["PreviewEncryption"] = OK
    messages.extend([p.error for p in preview.previews if p.error] + list(preview.problems))

    # The hot path: good and hostile events, a too-long SEGMENT value, bad destinations,
    # and a person (refused) sending PHI.
    replies = {}
    for name, dst in {
        "EncryptEvents main": world.main,
        "EncryptEvents segment": segment_dst,
        "EncryptEvents disabled": world.unencrypted,
        "EncryptEvents keyless": world.fresh_for_import,
        "EncryptEvents unknown destination": "dst_canary_missing",
    }.items():
        request = encrypt_pb2.EncryptEventsRequest(
            destination_id=dst, events=good + hostile_events()
        )
        try:
            replies[name] = await producer.EncryptEvents(request, timeout=30)
            codes[name] = OK
        except grpc.aio.AioRpcError as exc:
            codes[name] = exc.code()
            messages.append(exc.details() or "")
    for reply in replies.values():
        messages.extend(r.error.message for r in reply.results if r.HasField("error"))
    codes["EncryptEvents as a person"] = await code(
        messages,
        person_encrypt.EncryptEvents(
            encrypt_pb2.EncryptEventsRequest(destination_id=world.main, events=good)
        ),
    )

    # auditsvc: RecordEvents' failing paths with PHI in details; reads filtered by end user.
    phi_details = struct_pb2.Struct()
    phi_details.update({"email": EMAIL, "diagnosis": DX})
    nameless = event("", details={"email": EMAIL})
    codes["RecordEvents no workspace"] = await code(
        messages, recorder.RecordEvents(audit_pb2.RecordEventsRequest(events=[nameless]))
    )
    codes["RecordEvents as a person"] = await code(
        messages,
        audit.RecordEvents(
            audit_pb2.RecordEventsRequest(events=[event(ws, details={"email": EMAIL})]),
            metadata=PERSON,
        ),
    )
    codes["QueryEvents by end user"] = await code(
        messages,
        audit.QueryEvents(
            audit_pb2.QueryEventsRequest(
                filter=audit_pb2.AuditFilter(workspace_id=ws, end_user_id=END_USER),
                access_reason="canary",
            ),
            metadata=PERSON,
        ),
    )
    codes["ExportEvents by end user"] = await code(
        messages,
        audit.ExportEvents(
            audit_pb2.ExportEventsRequest(
                filter=audit_pb2.AuditFilter(workspace_id=ws, end_user_id=END_USER),
                format=audit_pb2.EXPORT_FORMAT_JSONL,
                access_reason="canary",
            ),
            metadata=person("canary-auditor"),
        ),
    )
    return {
        "codes": codes,
        "messages": messages,
        "replies": replies,
        "keys": [(plain_pem, None), (protected.private_key.private_key_pem, PASSPHRASE)],
        "audit": audit,
    }


def pg_dump(port: int, database: str) -> bytes:
    """The whole database as SQL. posix_spawn (no cwd, user or close_fds), not fork: a forked
    child runs gRPC's at-fork handlers while the in-process servers' threads are busy, and
    those sometimes abort it."""
    result = subprocess.run(
        [
            str(bin_dir() / "pg_dump"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            database,
        ],
        capture_output=True,
        close_fds=False,
        env={**os.environ, "LC_ALL": "C"},
        check=True,
        timeout=120,
    )
    return result.stdout


def leaks(blobs: list[tuple[str, bytes]], wanted: dict[str, bytes]) -> list[tuple[str, str]]:
    """(where, which canary) for every canary found in any blob."""
    return sorted((name, label) for name, blob in blobs for label, w in wanted.items() if w in blob)


async def _delivery_logged(database_url: str, log_text: str) -> bool:
    """Whether the relays' "outbox_delivered" lines account for every outbox row."""
    con = await asyncpg.connect(database_url)
    try:
        rows = 0
        for schema in ("keysvc", "policysvc"):
            rows += int(await con.fetchval(f"SELECT count(*) FROM {schema}.audit_outbox"))  # noqa: S608
    finally:
        await con.close()
    logged = 0
    for line in log_text.splitlines():
        if '"outbox_delivered"' in line:
            logged += int(orjson.loads(line).get("rows", 0))
    return logged >= rows


async def _drained(database_url: str) -> bool:
    con = await asyncpg.connect(database_url)
    try:
        return all(
            [
                await con.fetchval(sql)
                for sql in (
                    "SELECT count(*) = 0 FROM keysvc.audit_outbox WHERE delivered_at IS NULL",
                    "SELECT count(*) = 0 FROM policysvc.audit_outbox WHERE delivered_at IS NULL",
                )
            ]
        )
    finally:
        await con.close()


async def _audit_text(audit: audit_pb2_grpc.AuditServiceStub, workspace_id: str) -> str:
    records = await whole_log(
        audit, audit_pb2.AuditFilter(workspace_id=workspace_id), "canary check", PERSON
    )
    export = await drain(
        audit.ExportEvents(
            audit_pb2.ExportEventsRequest(
                filter=audit_pb2.AuditFilter(workspace_id=workspace_id),
                format=audit_pb2.EXPORT_FORMAT_JSONL,
                access_reason="canary check",
            ),
            metadata=PERSON,
        )
    )
    return "\n".join(json_format.MessageToJson(r) for r in records) + export.decode()


async def test_canaries_appear_nowhere(
    stack: Stack, pg_cluster: PgCluster, capfd: pytest.CaptureFixture[str]
) -> None:
    """No PHI canary, private key or passphrase in the logs, audit records, dump or data
    directory, nor in any error message a caller was sent; the matcher pattern only in
    policysvc's configuration tables."""
    if pg_cluster.local is None:
        pytest.skip("needs the private PostgreSQL (DATABASE_URL points at an external server)")
    app_log = io.StringIO()
    configure_logging("debug", "json", stream=app_log)
    world = await World.create(stack, "Canary Clinic")
    pushed = await push_everything(stack, world)
    await eventually(lambda: _drained(stack.database_url), timeout=20)
    # The relays log a batch after committing it: wait for those last lines too.
    await eventually(lambda: _delivery_logged(stack.database_url, app_log.getvalue()))
    audit_text = await _audit_text(pushed["audit"], world.workspace_id)

    await flush_to_disk(pg_cluster.admin_url)
    local = pg_cluster.local
    database = urlsplit(stack.database_url).path.lstrip("/")
    dump = pg_dump(local.port, database)
    data = list(data_files(local.data_dir))
    captured = capfd.readouterr()
    logs = [
        ("postgresql.log", local.log_file.read_bytes()),
        ("application log", app_log.getvalue().encode()),
        ("stderr", (captured.out + captured.err).encode()),
    ]

    values = {v: v.encode() for v in [*PHI, PASSPHRASE, *WEAK]}
    for i, (pem, passphrase) in enumerate(pushed["keys"]):
        for j, needle in enumerate(needles(pem, passphrase and passphrase.encode())):
            values[f"private key {i} form {j}"] = needle
    everything = {**values, MATCHER: MATCHER.encode(), END_USER: END_USER.encode()}
    stored = [("pg_dump", dump), *data]
    found = {
        "logs": leaks(logs, everything),
        "audit records": leaks(
            [("audit", audit_text.encode())], {**values, MATCHER: MATCHER.encode()}
        ),
        "database": leaks(stored, values),
        "error messages": leaks(
            [("messages", "\n".join(pushed["messages"]).encode())],
            {**values, MATCHER: MATCHER.encode()},
        ),
    }
    assert found == {"logs": [], "audit records": [], "database": [], "error messages": []}
    # Positive controls: the search finds what is stored, logs and records were captured, the
    # encrypted paths really went out encrypted and the paths ran as intended.
    assert search([("pg_dump", dump)], [MATCHER.encode()]) == ["pg_dump"]
    assert END_USER in audit_text
    # Error messages were collected: the hostile events' per-event errors among them.
    assert any("not valid JSON" in m for m in pushed["messages"])
    assert ("rpc_finished" in app_log.getvalue(), "Keys Generated" in audit_text) == (True, True)
    main = pushed["replies"]["EncryptEvents main"].results
    assert [EMAIL in r.event.decode() for r in main[:3]] == [False] * 3
    assert {name: c for name, c in pushed["codes"].items() if c not in (OK, INVALID)} == {
        "EncryptEvents as a person": grpc.StatusCode.PERMISSION_DENIED,
        "RecordEvents as a person": grpc.StatusCode.PERMISSION_DENIED,
        "EncryptEvents unknown destination": grpc.StatusCode.NOT_FOUND,
        # keysvc's answer to a wrong proof of possession.
        "ConfirmKey wrong answer": grpc.StatusCode.PERMISSION_DENIED,
    }
