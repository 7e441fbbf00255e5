"""The whole product served once per module: four services, relays to auditsvc, one database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from phiseal_dev.testing import PgCluster, RunningService, start_service
from tests.encryptsvc.stack import wait_serving


@dataclass
class Stack:
    """All four services against one database, keysvc and policysvc relaying to auditsvc."""

    database_url: str
    audit: RunningService
    policy: RunningService
    keys: RunningService
    encrypt: RunningService

    @property
    def services(self) -> dict[str, RunningService]:
        return {
            "keysvc": self.keys,
            "policysvc": self.policy,
            "encryptsvc": self.encrypt,
            "auditsvc": self.audit,
        }


@pytest_asyncio.fixture(scope="module")
async def stack(
    pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Set up once per module: the matrix, canary and fuzz modules each call hundreds of RPCs
    against objects that take seconds to create."""
    url = await pg_cluster.create_database()
    folder = tmp_path_factory.mktemp("security-stack")
    running: list[RunningService] = []
    try:
        audit = await start_service(
            "auditsvc",
            url,
            {
                "AUDITSVC_SIGNING_KEY_FILE": str(folder / "signing.pem"),
                "AUDITSVC_CHECKPOINT_INTERVAL_SECONDS": "3600",
            },
        )
        running.append(audit)
        relay = {"AUDITSVC_ADDR": audit.peer_address, "OUTBOX_POLL_SECONDS": "0.2"}
        policy = await start_service("policysvc", url, relay)
        running.append(policy)
        keys = await start_service("keysvc", url, {"POLICYSVC_ADDR": policy.peer_address, **relay})
        running.append(keys)
        encrypt = await start_service(
            "encryptsvc",
            None,
            {"POLICYSVC_ADDR": policy.peer_address, "KEYSVC_ADDR": keys.peer_address},
        )
        running.append(encrypt)
        await wait_serving(encrypt.channel())
        yield Stack(url, audit, policy, keys, encrypt)
    finally:
        for service in reversed(running):
            await service.stop()
        await pg_cluster.drop_database(url)
