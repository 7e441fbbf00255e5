"""Test helpers for the security mechanism: a secrets folder, tokens, TLS channels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phiseal_dev.pki import DevPki
from phiseal_dev.tokens import DevSigningKey, TokenMinter
from services.common.security.auth import Role
from services.common.security.tls import TlsFiles, channel_credentials
from services.common.server.config import Env, ServerSettings
from tests.common.fake_service import Req, call

IDENTITIES = ("keysvc", "policysvc", "encryptsvc", "auditsvc", "fake")


@dataclass
class Secrets:
    """A development secrets folder as `make run` would create it."""

    folder: Path
    pki: DevPki
    minter: TokenMinter

    @classmethod
    def create(cls, folder: Path) -> Secrets:
        pki = DevPki(folder)
        pki.ensure(IDENTITIES)
        key = DevSigningKey(folder)
        key.ensure()
        return cls(folder=folder, pki=pki, minter=key.minter())

    @property
    def ca_pem(self) -> bytes:
        return (self.folder / "ca.pem").read_bytes()

    def settings(self, **env: str) -> ServerSettings:
        base = {"FAKE_PORT": "0", "PHISEAL_TLS_DIR": str(self.folder)}
        return ServerSettings.from_env("fake", 0, Env({**base, **env}))

    def token(self, subject: str = "alice", **memberships: Role) -> str:
        return self.minter.mint(subject, {ws: [role] for ws, role in memberships.items()})

    def files(self, identity: str) -> TlsFiles:
        return self.pki.files(identity)


def other_signing_key() -> TokenMinter:
    return TokenMinter(Ed25519PrivateKey.generate())


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def person_channel(port: int, ca_pem: bytes) -> grpc.aio.Channel:
    """Server-authenticated TLS, as grpcurl with -cacert."""
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=ca_pem)
    )


def service_channel(port: int, files: TlsFiles) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(files))


def raw_client_channel(port: int, ca_pem: bytes, cert: bytes, key: bytes) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(ca_pem, private_key=key, certificate_chain=cert)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def call_code(
    channel: grpc.aio.Channel,
    method: str,
    *,
    service: str = "",
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    """The status code of one call to the fake service's ``method``."""
    code, _ = await call_error(channel, method, service=service, metadata=metadata)
    return code


async def call_error(
    channel: grpc.aio.Channel,
    method: str,
    *,
    service: str = "",
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[grpc.StatusCode, str]:
    """(code, details) of one call that is expected to fail."""
    try:
        await call(channel, method)(Req(service=service), metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def memberships(**roles: Role) -> Mapping[str, frozenset[Role]]:
    return {ws: frozenset({role}) for ws, role in roles.items()}
