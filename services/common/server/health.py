"""Health that follows the service's dependencies: NOT_SERVING while any check fails.

Alarms are health details that must not stop the service (a quarantined audit entry, an audit
chain that stopped verifying): they set the separate health service name ``phiseal.alarms``
to NOT_SERVING and log ``health_alarm`` with the reasons, while the service itself keeps
SERVING — an alarm is for a person to look at, not a reason to take dependants down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from services.common.server.lifecycle import Periodic

log = structlog.get_logger("health")

# A check answers None when healthy, or a short reason (no secrets) when not.
HealthCheck = Callable[[], Awaitable[str | None]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# `grpcurl -plaintext -d '{"service":"phiseal.alarms"}' host:port grpc.health.v1.Health/Check`
ALARMS = "phiseal.alarms"


def database_check(pool: asyncpg.Pool, timeout: float = 2.0) -> HealthCheck:
    """Healthy while ``SELECT 1`` answers within ``timeout``."""

    async def check() -> str | None:
        try:
            async with asyncio.timeout(timeout):
                async with pool.acquire() as con:
                    await con.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            return f"database unreachable ({type(exc).__name__})"
        return None

    return check


class HealthMonitor:
    """Runs the checks every ``interval`` seconds and sets every service name's status."""

    def __init__(
        self,
        servicer: HealthServicer,
        service_names: Sequence[str],
        checks: Sequence[HealthCheck],
        interval: float,
        alarms: Sequence[HealthCheck] = (),
    ) -> None:
        self._servicer = servicer
        self._names = ["", *service_names]
        self._checks = list(checks)
        self._alarms = list(alarms)
        self._alarm_reasons: list[str] | None = None
        self.alarm_reasons: list[str] = []
        self._periodic = Periodic("health-monitor", interval, self.check_once)
        self._serving: bool | None = None
        self._stopping = False
        self._listeners: list[Callable[[bool], None]] = []

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """``listener(serving)`` on every change of status (a worker tells its supervisor)."""
        self._listeners.append(listener)

    def _tell(self, serving: bool) -> None:
        for listener in self._listeners:
            listener(serving)

    async def check_once(self) -> bool:
        reasons = [r for r in await asyncio.gather(*(c() for c in self._checks)) if r]
        alarms = [r for r in await asyncio.gather(*(c() for c in self._alarms)) if r]
        serving = not reasons
        if self._stopping:
            return False
        if alarms != self._alarm_reasons:
            await self._servicer.set(ALARMS, NOT_SERVING if alarms else SERVING)
            if alarms:
                log.error("health_alarm", alarms=alarms)
            elif self._alarm_reasons:
                log.info("health_alarm_cleared")
            self._alarm_reasons = alarms
            self.alarm_reasons = alarms
        if serving != self._serving:
            for name in self._names:
                await self._servicer.set(name, SERVING if serving else NOT_SERVING)
            if serving:
                log.info("health_serving")
            else:
                log.warning("health_not_serving", reasons=reasons)
            self._serving = serving
            self._tell(serving)
        return serving

    async def start(self) -> None:
        """NOT_SERVING until the first check passed, then a check every ``interval``."""
        for name in self._names:
            await self._servicer.set(name, NOT_SERVING)
        await self.check_once()
        await self._periodic.start()

    async def stop(self) -> None:
        """Stops checking and reports NOT_SERVING for good (shutdown has begun)."""
        self._stopping = True
        self._tell(False)
        await self._periodic.stop()
        await self._servicer.enter_graceful_shutdown()
