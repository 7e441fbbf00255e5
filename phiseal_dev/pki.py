"""The development PKI: a CA and one certificate per service identity, created once under a folder.

A service certificate names its service (URI SAN ``spiffe://phiseal/<service>`` and DNS SAN
``<service>``, which peers demand) and is valid as a server and as a client. For people on a
developer's loopback (grpcurl, the CLIs) it also carries ``localhost`` and ``127.0.0.1``; no peer
channel accepts those as proof of which service answers. A client-only identity (``producer``)
names no host at all and is valid for client authentication only.
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
    server_name,
    write_private,
)

_DAY = dt.timedelta(days=1)
# Names people use for a service on a developer's loopback (never proof for a peer channel).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def _sans(identity: str, hosts: Sequence[str] | None) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity_uri(identity))]
    if hosts is None:
        return names
    for host in (server_name(identity), *hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _usages(server: bool) -> list[x509.ObjectIdentifier]:
    if server:
        return [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return [ExtendedKeyUsageOID.CLIENT_AUTH]


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
        hosts: Sequence[str] | None = LOOPBACK_HOSTS,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """A (certificate PEM, key PEM) pair for ``identity``: a server naming the service and
        ``hosts`` (and a client), or with ``hosts=None`` a client only."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans = _sans(identity, hosts)
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
            .add_extension(x509.ExtendedKeyUsage(_usages(hosts is not None)), critical=False)
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
            hosts = None if identity in CLIENT_IDENTITIES else LOOPBACK_HOSTS
            if not (files.cert.exists() and files.key.exists()) or not _current(
                files.cert.read_bytes(), ca, identity, hosts
            ):
                cert_pem, key_pem = ca.issue(identity, hosts=hosts)
                write_private(files.key, key_pem)
                write_private(files.cert, cert_pem)
            result[identity] = files
        return result


def _current(
    cert_pem: bytes, ca: CertificateAuthority, identity: str, hosts: Sequence[str] | None
) -> bool:
    """Whether ``cert_pem`` was issued by ``ca``, is still valid and names what ``issue`` would
    name now (else it is re-issued: a folder from before certificates named their service)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca.cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return (
        set(sans) == set(_sans(identity, hosts))
        and set(usages) == set(_usages(hosts is not None))
        and cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + _DAY
    )
