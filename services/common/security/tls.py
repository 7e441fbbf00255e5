"""Transport security: gRPC credentials from certificate files, and the verified mTLS identity.

The development CA that issues those files lives in ``phiseal_dev.pki``.

Every service certificate names its service twice: a URI SAN ``spiffe://phiseal/<service>``
(the identity its peers' servers read from it as a client) and a DNS SAN ``<service>`` (the name
a peer channel demands of it as a server, whatever address it dialled). Client-only identities
(``producer``) name no host and are good for client authentication only. A service identity is
only ever read from a client certificate that the TLS handshake verified against our CA, never
from metadata (docs/peer-identity.md).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

SPIFFE_PREFIX = "spiffe://phiseal/"
SERVICE_IDENTITIES = ("keysvc", "policysvc", "encryptsvc", "auditsvc")
# Client-only identities: the event pipeline that calls EncryptEvents (ghz uses it too).
CLIENT_IDENTITIES = ("producer",)
DEFAULT_SECRETS_DIR = Path(".run/dev-secrets")
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
# Identities are short lowercase names; anything else in a SAN is not ours.
_IDENTITY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")

_DAY = dt.timedelta(days=1)


def identity_uri(identity: str) -> str:
    """The URI SAN naming a service identity."""
    return f"{SPIFFE_PREFIX}{identity}"


def write_private(path: Path, data: bytes) -> None:
    """Writes ``data`` readable by the owner only, atomically (never a world-readable moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class TlsFiles:
    """The three files one service needs: the CA to trust, its certificate and its key."""

    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, folder: Path, identity: str) -> TlsFiles:
        return cls(
            ca_cert=folder / CA_CERT,
            cert=folder / f"{identity}.pem",
            key=folder / f"{identity}-key.pem",
        )

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(CA, certificate, key) bytes; a missing file is a clear error naming the fix."""
        try:
            return self.ca_cert.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"TLS file {exc.filename} is missing: run `make run` (which creates the "
                "development CA) or point PHISEAL_TLS_DIR at a folder holding ca.pem, "
                "<service>.pem and <service>-key.pem"
            ) from None


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server-authenticated TLS for the service port, where people bring a bearer token.

    grpc's Python API cannot ask for an optional client certificate (require_client_auth=False
    means "do not request one"), so peer services use a separate mutual-TLS port instead.
    """
    _, cert, key = files.read()
    return grpc.ssl_server_credentials([(key, cert)])


def mtls_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Mutual TLS for the peer port: the handshake fails without a client certificate that
    chains to our CA and is within its validity period."""
    ca, cert, key = files.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def server_name(identity: str) -> str:
    """The DNS name a service's certificate carries and its peers' channels demand."""
    return identity


def channel_credentials(
    files: TlsFiles, *, with_client_cert: bool = True
) -> grpc.ChannelCredentials:
    """Credentials for a channel to a peer: trust our CA, present our certificate."""
    ca, cert, key = files.read()
    if not with_client_cert:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def peer_service_identity(auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
    """The service named by the peer's verified client certificate, or None.

    gRPC fills the peer properties of the auth context only from a certificate chain the
    handshake verified (the mutual-TLS port), and sets ``peer_spiffe_id`` only when the
    certificate carries exactly one URI SAN; on plaintext or server-only TLS there is none.
    """
    if list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
        return None
    ids = list(auth_context.get("peer_spiffe_id", ()))
    if len(ids) != 1:
        return None
    text = ids[0].decode("ascii", errors="replace")
    if not text.startswith(SPIFFE_PREFIX):
        return None
    identity = text[len(SPIFFE_PREFIX) :]
    if not identity or not set(identity) <= _IDENTITY_CHARS:
        return None
    return identity
