"""Real objects for the security tests, created through the public APIs as an admin would."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from dataclasses import dataclass
from typing import Any

import phiseal
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from google.protobuf.message import Message
from jwcrypto import jwe, jwk
from phiseal.keys.v1 import keys_pb2
from phiseal.policy.v1 import policy_pb2

from tests.auditsvc.helpers import event
from tests.encryptsvc.stack import FIELDS, PERSON, SAMPLE_LINES, X25519, Admin
from tests.security.conftest import Stack


@dataclass(frozen=True)
class Rpc:
    """One RPC as the descriptors declare it."""

    method: str  # "/phiseal.keys.v1.KeyService/GenerateKeyPair"
    service: str  # "keysvc"
    request: type[Message]
    response: type[Message]
    streaming: bool

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[-1]


_SERVICE_OF_PACKAGE = {
    "phiseal.keys.v1": "keysvc",
    "phiseal.policy.v1": "policysvc",
    "phiseal.encrypt.v1": "encryptsvc",
    "phiseal.audit.v1": "auditsvc",
}


def every_rpc() -> list[Rpc]:
    """Every RPC of every service in the generated descriptors: a new RPC shows up here."""
    rpcs: list[Rpc] = []
    for info in pkgutil.walk_packages(phiseal.__path__, "phiseal."):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                rpcs.append(
                    Rpc(
                        method=f"/{service.full_name}/{m.name}",
                        service=_SERVICE_OF_PACKAGE[service.file.package],
                        request=_message_class(m.input_type),
                        response=_message_class(m.output_type),
                        streaming=m.server_streaming,
                    )
                )
    return rpcs


def _message_class(descriptor: Any) -> type[Message]:
    module = importlib.import_module(
        descriptor.file.name.replace("/", ".").removesuffix(".proto") + "_pb2"
    )
    cls: type[Message] = getattr(module, descriptor.name)
    return cls


def solve(challenge: str, private_key_pem: str) -> str:
    """What a customer does with a rotation challenge: decrypt it with the new private key."""
    token = jwe.JWE()
    token.deserialize(challenge, key=jwk.JWK.from_pem(private_key_pem.encode()))
    return bytes(token.payload).decode()


def public_pem() -> str:
    key = X25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class World:
    """A HIPAA-eligible workspace and destinations in every state the RPCs need."""

    workspace_id: str
    main: str  # key v1 (X25519), encryption enabled on FIELDS
    fresh_for_generate: str
    with_key: str  # key v1, for RegenerateKeyPair
    pending: str  # key v2 pending confirmation
    pending_answer: str
    fresh_for_import: str
    unencrypted: str  # key v1, encryption off: EnableEncryption
    encrypting: str  # key v1, encryption on: DisableEncryption
    versions: dict[str, int]  # policy version per destination when the world was made

    @classmethod
    async def create(cls, stack: Stack, name: str = "Security") -> World:
        admin = Admin(stack.policy.channel(), stack.keys.channel())
        ws = await admin.workspace(name)
        await admin.make_yellow(ws, FIELDS)
        main, _ = await admin.encrypting_destination(ws, FIELDS, algorithm=X25519, name="main")
        with_key = await admin.destination(ws, "with key")
        await admin.generate(with_key, X25519)
        pending = await admin.destination(ws, "pending")
        await admin.generate(pending, X25519)
        rotated = await admin.keys.RegenerateKeyPair(
            keys_pb2.RegenerateKeyPairRequest(
                destination_id=pending,
                algorithm=X25519,
                activation=keys_pb2.ACTIVATION_AFTER_CONFIRMATION,
            ),
            metadata=PERSON,
        )
        unencrypted = await admin.destination(ws, "unencrypted")
        await admin.generate(unencrypted, X25519)
        encrypting, _ = await admin.encrypting_destination(
            ws, FIELDS, algorithm=X25519, name="encrypting"
        )
        fresh_for_generate = await admin.destination(ws, "fresh")
        fresh_for_import = await admin.destination(ws, "import")
        return cls(
            workspace_id=ws,
            main=main,
            fresh_for_generate=fresh_for_generate,
            with_key=with_key,
            pending=pending,
            pending_answer=solve(rotated.challenge, rotated.private_key.private_key_pem),
            fresh_for_import=fresh_for_import,
            unencrypted=unencrypted,
            encrypting=encrypting,
            versions={d: await admin.version(d) for d in (main, unencrypted, encrypting)},
        )

    def request(self, rpc: Rpc) -> Message:
        """A request that succeeds for a caller allowed to make it (made afresh each call)."""
        ws, cls = self.workspace_id, rpc.request
        fields: dict[str, Any]
        match rpc.name:
            case "GenerateKeyPair":
                fields = {"destination_id": self.fresh_for_generate, "algorithm": X25519}
            case "RegenerateKeyPair":
                fields = {
                    "destination_id": self.with_key,
                    "algorithm": X25519,
                    "activation": keys_pb2.ACTIVATION_IMMEDIATE,
                }
            case "ConfirmKey":
                fields = {
                    "destination_id": self.pending,
                    "version": 2,
                    "challenge_plaintext": self.pending_answer,
                }
            case "ImportPublicKey":
                fields = {
                    "destination_id": self.fresh_for_import,
                    "public_key_pem": public_pem(),
                    "activation": keys_pb2.ACTIVATION_IMMEDIATE,
                }
            case "GetPublicKey" | "ListKeyVersions" | "GetDestination" | "GetPolicy":
                fields = {"destination_id": self.main}
            case "ListPolicyVersions":
                fields = {"destination_id": self.main}
            case "WatchKeys" | "WatchPolicies":
                fields = {"destination_ids": [self.main]}
            case "CreateWorkspace":
                fields = {"name": "Created by the matrix"}
            case "GetWorkspace" | "ListDestinations" | "VerifyChain":
                fields = {"workspace_id": ws}
            case "SetHipaaEligibility":
                fields = {"workspace_id": ws, "eligible": True, "baa_reference": "BAA-2"}
            case "CreateDestination":
                fields = {
                    "workspace_id": ws,
                    "name": "created",
                    "type": policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
                }
            case "ListClassifications":
                fields = {"workspace_id": ws, "sample_events": [SAMPLE_LINES[0].decode()]}
            case "SetClassification":
                fields = {
                    "workspace_id": ws,
                    "override": policy_pb2.PathOverride(
                        path="traits.favourite_colour",
                        classification=policy_pb2.CLASSIFICATION_YELLOW,
                    ),
                }
            case "EnableEncryption":
                fields = {
                    "destination_id": self.unencrypted,
                    "fields": FIELDS[:3],
                    "expected_version": self.versions[self.unencrypted],
                }
            case "UpdateEncryptedFields":
                fields = {
                    "destination_id": self.main,
                    "remove": [FIELDS[0]],
                    "expected_version": self.versions[self.main],
                }
            case "DisableEncryption":
                fields = {
                    "destination_id": self.encrypting,
                    "expected_version": self.versions[self.encrypting],
                    "confirm_destination_id": self.encrypting,
                }
            case "ListSelectableFields":
                fields = {"destination_id": self.main, "sample_events": [SAMPLE_LINES[0].decode()]}
            case "PreviewEncryption":
                fields = {
                    "destination_id": self.main,
                    "sample_events": [line.decode() for line in SAMPLE_LINES[:2]],
                }
            case "EncryptEvents":
                fields = {"destination_id": self.main, "events": SAMPLE_LINES[:2]}
            case "RecordEvents":
                fields = {"events": [event(ws, event_id=str(uuid.uuid4()))]}
            case "QueryEvents" | "ExportEvents":
                fields = {"filter": {"workspace_id": ws}, "access_reason": "security test"}
            case _:
                raise AssertionError(f"{rpc.method} has no request in the security tests' World")
        return cls(**fields)
