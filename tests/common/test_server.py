"""serve(): reflection, health that follows the database, graceful shutdown."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from phiseal_dev import dbroles
from phiseal_dev.localpg import LocalPostgres
from phiseal_dev.testing import ALL_SERVICES, PgCluster, eventually, start_service
from services.common.server.grpc_server import LIVENESS
from services.migrate import migrate_all
from tests.common import fake_service
from tests.common.fake_service import Req
from tests.conftest import StartService

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

FULL_NAMES = {
    "keysvc": "phiseal.keys.v1.KeyService",
    "policysvc": "phiseal.policy.v1.PolicyService",
    "encryptsvc": "phiseal.encrypt.v1.EncryptService",
    "auditsvc": "phiseal.audit.v1.AuditService",
}


async def list_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request])):
        return {s.name for s in reply.list_services_response.service}
    return set()


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return int(reply.status)


@pytest.mark.parametrize("name", ALL_SERVICES)
async def test_reflection_lists_service_health_and_reflection(
    start: StartService, name: str
) -> None:
    """Each service lists itself, grpc.health.v1.Health and reflection."""
    service = await start(name)
    names = await list_services(service.channel())
    assert names == {
        FULL_NAMES[name],
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


@pytest.mark.parametrize("name", ALL_SERVICES)
async def test_health_is_serving_for_overall_and_service(start: StartService, name: str) -> None:
    """Health answers SERVING for "" and for the service's full name."""
    peers: dict[str, str] = {}
    if name == "encryptsvc":
        # encryptsvc serves only once its watch streams to policysvc and keysvc are live.
        policy = await start("policysvc")
        keys = await start("keysvc", POLICYSVC_ADDR=policy.peer_address)
        peers = {"POLICYSVC_ADDR": policy.peer_address, "KEYSVC_ADDR": keys.peer_address}
    service = await start(name, **peers)
    channel = service.channel()
    await wait_for_status(channel, SERVING)
    assert [await health_status(channel), await health_status(channel, FULL_NAMES[name])] == [
        SERVING,
        SERVING,
    ]


async def wait_for_status(channel: grpc.aio.Channel, wanted: int, within: float = 15) -> int:
    async def reached() -> bool:
        return await health_status(channel) == wanted

    await eventually(reached, timeout=within, what=f"health status {wanted}")
    return wanted


async def test_health_follows_the_database() -> None:
    """NOT_SERVING while PostgreSQL is down, SERVING again once it is back; the liveness name
    stays SERVING throughout (an outage must not make Kubernetes restart the pods)."""
    pg = LocalPostgres(Path(tempfile.mkdtemp(prefix="phiseal-health-")) / "data")
    await asyncio.to_thread(pg.start)
    cluster = PgCluster(admin_url=pg.url(), local=pg)
    try:
        await dbroles.ensure_roles(pg.url(), "postgres")
        await migrate_all(dbroles.owner_url(pg.url()), ["keysvc"])
        service = await start_service("keysvc", cluster.url("postgres"))
        try:
            channel = service.channel()
            assert await wait_for_status(channel, SERVING) == SERVING
            await asyncio.to_thread(pg.stop, "immediate")
            assert await wait_for_status(channel, NOT_SERVING) == NOT_SERVING
            assert await health_status(channel, LIVENESS) == SERVING
            await asyncio.to_thread(pg.start)
            assert await wait_for_status(channel, SERVING) == SERVING
        finally:
            await service.stop()
    finally:
        cluster.stop()


async def test_shutdown_finishes_in_flight_call_and_refuses_new_ones() -> None:
    """stop(): an in-flight call completes; a call started afterwards is refused."""
    server = fake_service.build(grace=3)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        fake_service.SLOW_STARTED.clear()
        in_flight = asyncio.ensure_future(fake_service.call(channel, "Slow")(Req(service="0.7")))
        async with asyncio.timeout(10):
            await fake_service.SLOW_STARTED.wait()
        stopping = asyncio.ensure_future(server.stop())

        async def refusal() -> grpc.StatusCode | None:
            try:
                await fake_service.call(channel, "Echo")(Req(), timeout=2)
            except grpc.aio.AioRpcError as exc:
                # CANCELLED: the call got in just before the port closed and was cut off with
                # the server; DEADLINE_EXCEEDED: it got in and, on a loaded machine, waited out
                # its 2 s while the server drained (seen once in a full make check). Only a call
                # that starts after the port closed is a refusal.
                waited = (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
                return None if exc.code() in waited else exc.code()
            return None  # stop() has not closed the port yet

        refused = await eventually(refusal, timeout=10, what="a new call is refused")
        reply = await in_flight
        await stopping
    assert (reply.status, refused) == (SERVING, grpc.StatusCode.UNAVAILABLE)


async def test_health_reports_not_serving_once_shutdown_begins() -> None:
    """The first step of shutdown is NOT_SERVING, so balancers drain before the port closes."""
    server = fake_service.build(grace=1)
    await server.start()
    await server.monitor.stop()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        status = await health_status(channel)
    await server.stop()
    assert status == NOT_SERVING
