"""The development PKI: a CA and one certificate per service identity, created once under a folder.

Every service certificate names its identity as a URI SAN ``spiffe://phiseal/<service>`` and
is valid both as a server certificate (DNS ``localhost``, IP ``127.0.0.1``) and as the client
certificate that service presents to its peers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.security.tls import (
    CA_CERT,
    CA_KEY,
    CLIENT_IDENTITIES,
    DEFAULT_SECRETS_DIR,
    SERVICE_IDENTITIES,
    TlsFiles,
    identity_uri,
    write_private,
)

_DAY = dt.timedelta(days=1)


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
