"""Transport security: a development CA, per-service certificates, gRPC credentials, mTLS identity.

Every service certificate names its identity as a URI SAN ``spiffe://phiseal/<service>`` and
is valid both as a server certificate (DNS ``localhost``, IP ``127.0.0.1``) and as the client
certificate that service presents to its peers. A service identity is only ever read from a
client certificate that the TLS handshake verified against our CA, never from metadata.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PHIseal development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA key and certificate (EC P-256: the curve every TLS stack, BoringSSL included, has)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls, common_name: str = "PHIseal development CA", days: int = 3650
    ) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + days * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        return cls(cert=x509.load_pem_x509_certificate(cert_pem), key=key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def issue(
        self,
        identity: str,
        *,
        hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """A (certificate PEM, key PEM) pair for ``identity``, usable as server and client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity_uri(identity))]
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(identity))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(minutes=5))
            .not_valid_after(not_after or now + 825 * _DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


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


class DevPki:
    """The development CA and certificates under one folder, created once and then reused."""

    def __init__(self, folder: Path = DEFAULT_SECRETS_DIR) -> None:
        self.folder = folder

    def ca(self) -> CertificateAuthority:
        """The folder's CA, created on first use."""
        cert_path, key_path = self.folder / CA_CERT, self.folder / CA_KEY
        if cert_path.exists() and key_path.exists():
            return CertificateAuthority.load(cert_path.read_bytes(), key_path.read_bytes())
        ca = CertificateAuthority.create()
        write_private(key_path, ca.key_pem)
        write_private(cert_path, ca.cert_pem)
        return ca

    def files(self, identity: str) -> TlsFiles:
        return TlsFiles.in_dir(self.folder, identity)

    def ensure(
        self, identities: Sequence[str] = SERVICE_IDENTITIES + CLIENT_IDENTITIES
    ) -> dict[str, TlsFiles]:
        """Creates what is missing (CA, one certificate per identity); keeps what exists."""
        ca = self.ca()
        result: dict[str, TlsFiles] = {}
        for identity in identities:
            files = self.files(identity)
            if not (files.cert.exists() and files.key.exists()) or not _signed_by(
                files.cert.read_bytes(), ca
            ):
                cert_pem, key_pem = ca.issue(identity)
                write_private(files.key, key_pem)
                write_private(files.cert, cert_pem)
            result[identity] = files
        return result


def _signed_by(cert_pem: bytes, ca: CertificateAuthority) -> bool:
    """Whether ``cert_pem`` was issued by ``ca`` and is still valid (else it is re-issued)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + _DAY
