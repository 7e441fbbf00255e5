"""auditsvc fixtures: a running auditsvc with its signing key in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest_asyncio
from phiseal.audit.v1 import audit_pb2_grpc

from phiseal_dev.testing import RunningService
from tests.auditsvc.helpers import AuditClient
from tests.conftest import StartService


@pytest_asyncio.fixture
async def auditsvc(start: StartService, tmp_path: Path) -> RunningService:
    """auditsvc on an ephemeral port; checkpoints only on demand (a long interval)."""
    return await start(
        "auditsvc",
        AUDITSVC_SIGNING_KEY_FILE=str(tmp_path / "signing.pem"),
        AUDITSVC_CHECKPOINT_INTERVAL_SECONDS="3600",
    )


@pytest_asyncio.fixture
async def audit(auditsvc: RunningService) -> audit_pb2_grpc.AuditServiceStub:
    return AuditClient(auditsvc)
