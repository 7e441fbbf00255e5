"""Fixtures for the security tests: one secrets folder per session, a fake service on TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from services.common.server.grpc_server import GrpcServer
from tests.common import fake_service
from tests.common.fake_service import RecordingAuditor
from tests.common.secure import Secrets


@pytest.fixture(scope="session")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    """A development CA, certificates for every identity and a token signing key."""
    return Secrets.create(tmp_path_factory.mktemp("dev-secrets"))


@dataclass
class SecureFake:
    server: GrpcServer
    auditor: RecordingAuditor


@pytest_asyncio.fixture
async def secure_fake(secrets: Secrets) -> AsyncIterator[SecureFake]:
    """The fake service wired like a real one: TLS port, mTLS peer port, health-only port."""
    auditor = RecordingAuditor()
    server = fake_service.build_from_settings(secrets.settings(), auditor)
    await server.start()
    yield SecureFake(server, auditor)
    await server.stop()
