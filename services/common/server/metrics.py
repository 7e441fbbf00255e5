"""Prometheus metrics: one registry per service, RPC counters for the interceptor, /metrics.

Each service's composition root makes one ``Metrics`` and hands its meters to what it builds
(constructor injection, no module globals), so services started in one test process keep
separate numbers. ``MetricsEndpoint`` serves the registry over plain HTTP on the service's
metrics port (``<SVC>_METRICS_PORT``, docs/operations.md) from a daemon thread: a scrape never
waits for the event loop and the event loop never waits for a scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Protocol
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger("metrics")

# gRPC latency from sub-millisecond cache hits to multi-second exports and key generation.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Incrementing(Protocol):
    """A counter (or a labelled child of one): what domain code is handed to count with."""

    def inc(self, amount: float = 1) -> None: ...


class _Uncounted:
    """Counts nothing: the default where no registry was handed in (unit tests, tools)."""

    def inc(self, amount: float = 1) -> None:
        pass


UNCOUNTED: Incrementing = _Uncounted()


class Pool(Protocol):
    """The parts of ``asyncpg.Pool`` the pool gauge reads."""

    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...
    def get_max_size(self) -> int: ...


class RpcMetrics:
    """Calls and latency per RPC and status code, fed once per call by the interceptor.

    ``labels()`` takes a lock and hashes its arguments; the (method, code) children are cached
    here so a call costs one dictionary lookup, one counter increment and one observation.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._calls = Counter(
            "phiseal_rpc_calls",
            "Finished RPCs by method and gRPC status code",
            ["rpc", "code"],
            registry=registry,
        )
        self._seconds = Histogram(
            "phiseal_rpc_duration_seconds",
            "RPC handling time (streams: until the last message) by method and status code",
            ["rpc", "code"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, rpc: str, code: str, seconds: float) -> None:
        children = self._children.get((rpc, code))
        if children is None:
            children = (self._calls.labels(rpc, code), self._seconds.labels(rpc, code))
            self._children[(rpc, code)] = children
        children[0].inc()
        children[1].observe(seconds)


class _PoolCollector(Collector):
    """Reads the pool's sizes at scrape time (plain attribute reads, safe from the thread)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size, idle = self._pool.get_size(), self._pool.get_idle_size()
        family = GaugeMetricFamily(
            "phiseal_db_pool_connections", "Database pool connections by state", labels=["state"]
        )
        family.add_metric(["in_use"], size - idle)
        family.add_metric(["idle"], idle)
        yield family
        yield GaugeMetricFamily(
            "phiseal_db_pool_max_connections",
            "Largest size the database pool may grow to (DB_POOL_MAX)",
            value=self._pool.get_max_size(),
        )


class _ProcessWide(Collector):
    """prometheus-client's default registry (process and GC collectors, and any module-level
    metric such as the audit checkpointer's), served beside the service's own."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class Metrics:
    """One service's registry and the meters every service has."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ProcessWide())
        self.rpc = RpcMetrics(self.registry)
        Gauge(
            "phiseal_process_start_time_seconds",
            "When this service process started (Unix time)",
            registry=self.registry,
        ).set(time.time())

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        """A service-specific counter in this registry (``name`` without ``_total``)."""
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def watch_pool(self, pool: Pool) -> None:
        """Exports the database pool's use (``phiseal_db_pool_connections{state}``)."""
        self.registry.register(_PoolCollector(pool))


class MetricsEndpoint:
    """``GET /metrics`` on ``host:port`` (0 picks a free port) from a daemon thread."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.name = f"{metrics.service}-metrics"  # lifecycle's log lines name components
        self._metrics = metrics
        self._host = host
        self._port = port
        self._httpd: WSGIServer | None = None
        self.port = 0

    async def start(self) -> None:
        # Binding is a quick blocking call; serving runs on the thread prometheus-client starts.
        self._httpd, _ = start_http_server(self._port, self._host, self._metrics.registry)
        self.port = self._httpd.server_port
        log.info("metrics_serving", service=self._metrics.service, port=self.port)

    async def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            # shutdown() waits for the serving loop (up to its 0.5 s poll): not on the loop.
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
