"""auditsvc reports SERVING only while PostgreSQL makes acknowledged commits durable."""

from __future__ import annotations

import asyncpg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phiseal_dev.testing import PgCluster, RunningService, eventually


async def _status(service: RunningService) -> int:
    response = await health_pb2_grpc.HealthStub(service.channel()).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=2
    )
    status: int = response.status
    return status


async def _until(service: RunningService, wanted: int) -> int:
    async def reached() -> bool:
        return await _status(service) == wanted

    await eventually(reached, timeout=10, what=f"health status {wanted}")
    return wanted


async def test_synchronous_commit_off_is_not_serving(
    auditsvc: RunningService, pg_cluster: PgCluster
) -> None:
    """synchronous_commit = off makes auditsvc NOT_SERVING; restoring it makes it SERVING."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    admin = await asyncpg.connect(pg_cluster.admin_url)
    try:
        assert await _until(auditsvc, serving) == serving
        await admin.execute("ALTER SYSTEM SET synchronous_commit = off")
        await admin.execute("SELECT pg_reload_conf()")
        try:
            off = await _until(auditsvc, not_serving)
        finally:
            await admin.execute("ALTER SYSTEM RESET synchronous_commit")
            await admin.execute("SELECT pg_reload_conf()")
        back = await _until(auditsvc, serving)
    finally:
        await admin.close()
    assert (off, back) == (not_serving, serving)
