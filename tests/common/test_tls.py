"""Transport: the development PKI, TLS and mutual-TLS ports, the health-only port."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phiseal_dev.pki import CertificateAuthority, DevPki
from services.common.security.auth import Role
from services.common.security.tls import peer_service_identity
from tests.common import fake_service
from tests.common.conftest import SecureFake
from tests.common.secure import (
    Secrets,
    bearer,
    call_code,
    call_error,
    person_channel,
    raw_client_channel,
    service_channel,
)

SERVING = health_pb2.HealthCheckResponse.SERVING


def test_dev_pki_is_idempotent(tmp_path: Path) -> None:
    """A second ensure() keeps the CA and certificates (running services keep trusting them)."""
    pki = DevPki(tmp_path)
    pki.ensure(["keysvc"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    pki.ensure(["keysvc"])
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert before == after


def test_private_keys_and_folder_are_owner_only(tmp_path: Path) -> None:
    """Key files are 0600 and the folder 0700."""
    folder = tmp_path / "s"
    DevPki(folder).ensure(["keysvc"])
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in folder.iterdir()
        if p.name.endswith("-key.pem")
    }
    assert (modes, stat.S_IMODE(folder.stat().st_mode)) == (
        {"ca-key.pem": 0o600, "keysvc-key.pem": 0o600},
        0o700,
    )


def _names(cert: x509.Certificate) -> set[str]:
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.UniformResourceIdentifier)}
    names |= set(sans.get_values_for_type(x509.DNSName))
    return names | {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_certificate_names_its_service_and_loopback(tmp_path: Path) -> None:
    """A service certificate carries its SPIFFE identity and its own DNS name (what peers
    demand), plus localhost and 127.0.0.1 for people on the loopback; server and client."""
    files = DevPki(tmp_path).ensure(["policysvc"])["policysvc"]
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert _names(cert) == {"spiffe://phiseal/policysvc", "policysvc", "localhost", "127.0.0.1"}
    assert _usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_client_only_identity_names_no_host_and_only_authenticates_clients(
    tmp_path: Path,
) -> None:
    """The producer's certificate is no server's: no DNS or IP name, clientAuth only."""
    files = DevPki(tmp_path).ensure(["producer"])["producer"]
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert _names(cert) == {"spiffe://phiseal/producer"}
    assert _usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_certificate_of_the_old_shape_is_reissued(tmp_path: Path) -> None:
    """A folder from before certificates named their service (every one valid for localhost,
    as server and client) gets new ones on the next ensure()."""
    pki = DevPki(tmp_path)
    ca = pki.ca()
    for identity in ("producer", "keysvc"):
        cert, key = ca.issue(identity, hosts=None)  # any shape other than the current one
        (tmp_path / f"{identity}.pem").write_bytes(cert)
        (tmp_path / f"{identity}-key.pem").write_bytes(key)
    files = pki.ensure(["producer", "keysvc"])
    keysvc = x509.load_pem_x509_certificate(files["keysvc"].cert.read_bytes())
    assert "keysvc" in _names(keysvc)
    producer = x509.load_pem_x509_certificate(files["producer"].cert.read_bytes())
    assert _usages(producer) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_certificate_from_another_ca_is_reissued(tmp_path: Path) -> None:
    """ensure() replaces a certificate its CA did not sign."""
    pki = DevPki(tmp_path)
    files = pki.ensure(["keysvc"])["keysvc"]
    foreign, _ = CertificateAuthority.create().issue("keysvc")
    files.cert.write_bytes(foreign)
    pki.ensure(["keysvc"])
    assert files.cert.read_bytes() != foreign


def test_identity_needs_tls_and_exactly_one_spiffe_id() -> None:
    """Only a verified TLS peer with one well-formed SPIFFE id names a service."""
    ok = {"transport_security_type": [b"ssl"], "peer_spiffe_id": [b"spiffe://phiseal/keysvc"]}
    cases = [
        ok,
        {**ok, "transport_security_type": [b"insecure"]},
        {"transport_security_type": [b"ssl"]},
        {**ok, "peer_spiffe_id": [b"spiffe://other/keysvc"]},
        {**ok, "peer_spiffe_id": [b"spiffe://phiseal/Key svc"]},
        {**ok, "peer_spiffe_id": [b"spiffe://phiseal/a", b"spiffe://phiseal/b"]},
    ]
    assert [peer_service_identity(c) for c in cases] == ["keysvc", None, None, None, None, None]


async def test_plaintext_client_cannot_reach_the_service_port(secure_fake: SecureFake) -> None:
    """The service port speaks TLS only."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure_fake.server.port}") as channel:
        assert await call_code(channel, "Echo") == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_cannot_reach_the_peer_port(secure_fake: SecureFake) -> None:
    """The peer port speaks mutual TLS only."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure_fake.server.peer_port}") as channel:
        assert await call_code(channel, "Echo") == grpc.StatusCode.UNAVAILABLE


async def test_peer_port_refuses_a_client_without_certificate(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """Server-only TLS (a person's client) fails the peer port's handshake."""
    async with person_channel(secure_fake.server.peer_port, secrets.ca_pem) as channel:
        code = await call_code(channel, "Echo", metadata=bearer(secrets.token(ws_1=Role.ADMIN)))
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_client_certificate_from_another_ca_is_refused(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """A certificate naming encryptsvc but signed by a stranger's CA fails the handshake."""
    cert, key = CertificateAuthority.create().issue("encryptsvc")
    port = secure_fake.server.peer_port
    async with raw_client_channel(port, secrets.ca_pem, cert, key) as channel:
        assert await call_code(channel, "Echo") == grpc.StatusCode.UNAVAILABLE


async def test_expired_client_certificate_is_refused(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """A certificate from our CA that expired yesterday fails the handshake."""
    now = dt.datetime.now(dt.UTC)
    cert, key = secrets.pki.ca().issue(
        "encryptsvc", not_before=now - dt.timedelta(days=3), not_after=now - dt.timedelta(days=1)
    )
    port = secure_fake.server.peer_port
    async with raw_client_channel(port, secrets.ca_pem, cert, key) as channel:
        assert await call_code(channel, "Echo") == grpc.StatusCode.UNAVAILABLE


async def test_valid_service_certificate_is_the_callers_identity(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """encryptsvc's certificate on the peer port may call what encryptsvc is allowed."""
    async with service_channel(
        secure_fake.server.peer_port, secrets.files("encryptsvc")
    ) as channel:
        assert await call_code(channel, "Echo") == grpc.StatusCode.OK


async def test_service_outside_its_allow_list_is_denied(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """A verified service calling a method not on its allow-list gets PERMISSION_DENIED."""
    async with service_channel(
        secure_fake.server.peer_port, secrets.files("encryptsvc")
    ) as channel:
        code, details = await call_error(channel, "ServiceOnly")
    assert (code, details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "service encryptsvc is not allowed to call ServiceOnly",
    )


async def test_service_header_without_certificate_is_unauthenticated(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """Claiming a service identity in metadata, without its certificate, is refused."""
    async with person_channel(secure_fake.server.port, secrets.ca_pem) as channel:
        code = await call_code(channel, "Echo", metadata=(("x-phiseal-service", "encryptsvc"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_no_certificate_and_no_token_is_unauthenticated(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """A TLS caller with no credentials at all gets UNAUTHENTICATED with the fix."""
    async with person_channel(secure_fake.server.port, secrets.ca_pem) as channel:
        code, details = await call_error(channel, "Echo")
    assert (code, "phiseal-token" in details) == (grpc.StatusCode.UNAUTHENTICATED, True)


async def test_health_and_reflection_need_no_credentials_on_tls(
    secure_fake: SecureFake, secrets: Secrets
) -> None:
    """Health answers over TLS without a token (open methods)."""
    async with person_channel(secure_fake.server.port, secrets.ca_pem) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == SERVING


async def test_health_only_port_answers_health_in_plaintext(secure_fake: SecureFake) -> None:
    """Orchestrators probe the health-only port without certificates."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure_fake.server.health_port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=fake_service.SERVICE), timeout=5
        )
    assert reply.status == SERVING


async def test_health_only_port_serves_nothing_else(secure_fake: SecureFake) -> None:
    """The service's own methods are not reachable on the health-only port."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure_fake.server.health_port}") as ch:
        assert await call_code(ch, "Echo") == grpc.StatusCode.UNIMPLEMENTED


async def test_insecure_setting_serves_plaintext(secrets: Secrets) -> None:
    """PHISEAL_INSECURE=true (and only then) serves the service port in plaintext."""
    server = fake_service.build_from_settings(secrets.settings(PHISEAL_INSECURE="true"))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            code = await call_code(channel, "Echo")
    finally:
        await server.stop()
    assert code == grpc.StatusCode.OK
