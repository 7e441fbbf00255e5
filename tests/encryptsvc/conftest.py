"""encryptsvc fixtures: real policysvc and keysvc on fixed free ports, encryptsvc using them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio
from phiseal.encrypt.v1 import encrypt_pb2_grpc

from phiseal_dev.localpg import free_port
from phiseal_dev.testing import RunningService, person_channel
from tests.conftest import StartService
from tests.encryptsvc.keys import KeyPair
from tests.encryptsvc.stack import EXTRA_FIELDS, FIELDS, Admin, wait_serving

STALENESS = 1.0
HEARTBEAT = "0.1"


@dataclass
class Stack:
    """policysvc + keysvc + encryptsvc, a workspace and one destination encrypting FIELDS (JWE)."""

    start: StartService
    admin: Admin
    policy: RunningService
    keys: RunningService
    encrypt: RunningService
    stub: encrypt_pb2_grpc.EncryptServiceStub
    workspace_id: str
    destination_id: str
    key: KeyPair
    policy_port: int
    keys_port: int
    # The mutual-TLS ports encryptsvc (and keysvc) reach their peers on.
    policy_peer_port: int
    keys_peer_port: int

    async def start_policysvc(self) -> RunningService:
        """A (new) policysvc instance on the port encryptsvc and keysvc know."""
        self.policy = await self.start(
            "policysvc",
            POLICYSVC_PORT=str(self.policy_port),
            POLICYSVC_PEER_PORT=str(self.policy_peer_port),
            POLICYSVC_WATCH_HEARTBEAT_SECONDS=HEARTBEAT,
        )
        return self.policy

    async def start_keysvc(self) -> RunningService:
        """A (new) keysvc instance on the port encryptsvc knows."""
        self.keys = await self.start(
            "keysvc",
            KEYSVC_PORT=str(self.keys_port),
            KEYSVC_PEER_PORT=str(self.keys_peer_port),
            POLICYSVC_ADDR=f"127.0.0.1:{self.policy_peer_port}",
            KEYSVC_WATCH_HEARTBEAT_SECONDS=HEARTBEAT,
        )
        return self.keys


async def serve_encryptsvc(
    start: StartService, policy_peer_port: int, keys_peer_port: int, **env: str
) -> RunningService:
    service = await start(
        "encryptsvc",
        POLICYSVC_ADDR=f"127.0.0.1:{policy_peer_port}",
        KEYSVC_ADDR=f"127.0.0.1:{keys_peer_port}",
        ENCRYPTSVC_MAX_STALENESS_SECONDS=str(STALENESS),
        ENCRYPTSVC_PEER_TIMEOUT_SECONDS="0.5",
        ENCRYPTSVC_MAX_BATCH_EVENTS="50",
        **env,
    )
    # SERVING means both watch streams delivered their first RESYNC.
    await wait_serving(service.channel())
    return service


@pytest_asyncio.fixture
async def stack(start: StartService) -> AsyncIterator[Stack]:
    """The three services on one fresh database; dest encrypts FIELDS to an RSA-2048 key."""
    policy_port, keys_port = free_port(), free_port()
    policy_peer_port, keys_peer_port = free_port(), free_port()
    policy = await start(
        "policysvc",
        POLICYSVC_PORT=str(policy_port),
        POLICYSVC_PEER_PORT=str(policy_peer_port),
        POLICYSVC_WATCH_HEARTBEAT_SECONDS=HEARTBEAT,
    )
    keys = await start(
        "keysvc",
        KEYSVC_PORT=str(keys_port),
        KEYSVC_PEER_PORT=str(keys_peer_port),
        POLICYSVC_ADDR=policy.peer_address,
        KEYSVC_WATCH_HEARTBEAT_SECONDS=HEARTBEAT,
    )
    # The operator's own channels (TLS, admin token): they outlive a peer stopped and started
    # again on its port.
    channels = [person_channel(f"127.0.0.1:{p}") for p in (policy_port, keys_port)]
    admin = Admin(*channels)
    workspace_id = await admin.workspace()
    await admin.make_yellow(workspace_id, [*FIELDS, *EXTRA_FIELDS])
    destination_id, key = await admin.encrypting_destination(workspace_id)
    encrypt = await serve_encryptsvc(start, policy_peer_port, keys_peer_port)
    yield Stack(
        start=start,
        admin=admin,
        policy=policy,
        keys=keys,
        encrypt=encrypt,
        # The event pipeline's identity: EncryptEvents is for the producer certificate only.
        stub=encrypt_pb2_grpc.EncryptServiceStub(encrypt.peer_channel("producer")),
        workspace_id=workspace_id,
        destination_id=destination_id,
        key=key,
        policy_port=policy_port,
        keys_port=keys_port,
        policy_peer_port=policy_peer_port,
        keys_peer_port=keys_peer_port,
    )
    for channel in channels:
        await channel.close(None)
