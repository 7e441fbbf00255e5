"""Delivers a service's audit_outbox rows to auditsvc: in order, in batches, at least once.

A batch is read ``FOR UPDATE SKIP LOCKED`` (replicas share the work instead of sending the same
rows), sent with RecordEvents, and marked delivered in the same transaction only after auditsvc
acknowledged it. A crash between the ack and the commit resends the batch; auditsvc
deduplicates by event id. While auditsvc is unreachable the relay backs off exponentially up to
a cap; once the oldest undelivered row is older than ``OUTBOX_MAX_AGE_SECONDS`` the service's
health check reports NOT_SERVING. An entry auditsvc refuses as invalid (RecordEvents answers
per entry) never blocks the rest: it moves to ``audit_outbox_quarantine`` with auditsvc's
reason, and the relay raises an alarm (log ``audit_entry_quarantined``, the
``phiseal_audit_outbox_quarantined_total`` counter, and the ``phiseal.alarms`` health detail
while the table holds rows) and keeps delivering. ``append_to_outbox`` NOTIFYs
``<schema>_audit_outbox`` at commit, which wakes the relay at once; it also polls, because
NOTIFY is lost while nobody listens.

The backlog gauges (``phiseal_audit_outbox_backlog``, ``..._oldest_age_seconds``, refreshed by
every health check) and the delivered and quarantined counters live in the service's metrics
registry (services.common.server.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import orjson
import structlog
from google.protobuf import json_format
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from services.common.data.changefeed import ChangeFeed
from services.common.server.clients import open_peer_channel
from services.common.server.config import Env, ServerSettings
from services.common.server.lifecycle import Background, Closing, Components
from services.common.server.metrics import Metrics
from services.common.vocabulary import ChangeKind

log = structlog.get_logger("outbox_relay")

_CLAIM_BATCH = """
SELECT seq, event::text AS event FROM audit_outbox
WHERE delivered_at IS NULL
ORDER BY seq
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

_MARK_DELIVERED = """
UPDATE audit_outbox SET delivered_at = clock_timestamp() WHERE seq = ANY($1::bigint[])
"""

_QUARANTINE = """
WITH moved AS (
    DELETE FROM audit_outbox WHERE seq = ANY($1::bigint[])
    RETURNING seq, event_id, event, created_at
)
INSERT INTO audit_outbox_quarantine (seq, event_id, event, reason, created_at)
SELECT m.seq, m.event_id, m.event, r.reason, m.created_at
FROM moved m JOIN unnest($1::bigint[], $2::text[]) AS r(seq, reason) ON r.seq = m.seq
"""

_QUARANTINE_COUNT = "SELECT count(*) FROM audit_outbox_quarantine"

_BACKLOG = """
SELECT count(*) AS rows,
       coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS age
FROM audit_outbox WHERE delivered_at IS NULL
"""

_RETRYABLE = (grpc.aio.AioRpcError, OSError, TimeoutError, asyncpg.PostgresError)


def notify_channel(schema: str) -> str:
    """The NOTIFY channel ``append_to_outbox`` signals (``current_schema() || '_audit_outbox'``)."""
    return f"{schema}_audit_outbox"


@dataclass(frozen=True)
class RelaySettings:
    """OUTBOX_* settings shared by every service with an outbox."""

    max_age: float
    batch_size: int
    poll_interval: float
    max_backoff: float
    rpc_timeout: float
    start_delay: float

    @classmethod
    def from_env(cls, env: Env) -> RelaySettings:
        return cls(
            max_age=env.number("OUTBOX_MAX_AGE_SECONDS", 300.0, minimum=0.1),
            batch_size=env.integer("OUTBOX_BATCH_SIZE", 100, minimum=1, maximum=1000),
            poll_interval=env.number("OUTBOX_POLL_SECONDS", 2.0, minimum=0.01),
            max_backoff=env.number("OUTBOX_MAX_BACKOFF_SECONDS", 30.0, minimum=0.01),
            rpc_timeout=env.number("OUTBOX_RPC_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            # Only for tests that must act before the relay's first run.
            start_delay=env.number("OUTBOX_START_DELAY_SECONDS", 0.0),
        )


def to_proto(event: dict[str, Any]) -> audit_pb2.AuditEvent:
    """An outbox row (``AuditEntry.to_json``) as the wire message."""
    data = dict(event)
    data["outcome"] = f"OUTCOME_{str(data.get('outcome', '')).upper()}"
    return json_format.ParseDict(data, audit_pb2.AuditEvent())


class OutboxRelay:
    """One per process: ``start`` after the server is up, ``stop`` before the pool closes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        server: ServerSettings,
        schema: str,
        auditsvc_addr: str,
        settings: RelaySettings,
        metrics: Metrics | None = None,
    ) -> None:
        self._pool = pool
        self._service = server.service
        self._security = server.security
        self._schema = schema
        self._addr = auditsvc_addr
        self._settings = settings
        self._wake = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._feed = ChangeFeed(
            server.require_database(), notify_channel(schema), heartbeat_interval=5.0
        )
        # Stopped in reverse: the relay loop, the listener, the feed, then auditsvc's channel.
        self._parts = Components(
            [
                Closing("auditsvc-channel", self._close_channel),
                self._feed,
                Background("outbox-listen", self._listen),
                Background("outbox-relay", self._run),
            ],
            name="outbox relay",
        )
        metrics = metrics or Metrics(server.service)
        self._backlog = metrics.gauge(
            "phiseal_audit_outbox_backlog", "Audit outbox rows not yet delivered to auditsvc"
        )
        self._oldest_age = metrics.gauge(
            "phiseal_audit_outbox_oldest_age_seconds",
            "Age of the oldest audit outbox row not yet delivered to auditsvc",
        )
        self._delivered = metrics.counter(
            "phiseal_audit_outbox_delivered", "Audit outbox rows acknowledged by auditsvc"
        )
        self._quarantined = metrics.counter(
            "phiseal_audit_outbox_quarantined",
            "Audit outbox entries auditsvc refused as invalid, moved to audit_outbox_quarantine",
        )

    async def start(self) -> None:
        await self._parts.start()

    async def stop(self) -> None:
        await self._parts.stop()

    def _stub(self) -> audit_pb2_grpc.AuditServiceStub:
        if self._channel is None:
            self._channel = open_peer_channel(
                self._addr, self._service, self._security, peer="auditsvc"
            )
        return audit_pb2_grpc.AuditServiceStub(self._channel)

    async def _close_channel(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close(None)

    async def _listen(self) -> None:
        with self._feed.subscribe() as sub:
            async for message in sub:
                if message.kind is not ChangeKind.HEARTBEAT:
                    self._wake.set()

    async def _run(self) -> None:
        await asyncio.sleep(self._settings.start_delay)
        backoff = 0.0
        while True:
            self._wake.clear()
            try:
                while await self.deliver_batch(self._stub()):
                    pass
                backoff = 0.0
            except Exception as exc:
                # Anything, expected (auditsvc or the database down) or not (a row auditsvc
                # refuses, a bug): the relay must keep trying, never end silently; a backlog
                # that stops draining turns health NOT_SERVING through health_check.
                backoff = min(self._settings.max_backoff, max(0.05, backoff * 2))
                code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else ""
                (log.warning if isinstance(exc, _RETRYABLE) else log.error)(
                    "outbox_delivery_failed",
                    error_type=type(exc).__name__,
                    code=code,
                    retry_in=round(backoff, 2),
                )
                # A fresh channel next time: grpc's own reconnect backoff grows to minutes,
                # which would hide a recovered auditsvc far longer than our capped backoff.
                await self._close_channel()
                # Jitter keeps replicas from retrying in lock-step.
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # noqa: S311
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_interval):
                    await self._wake.wait()

    async def deliver_batch(self, stub: audit_pb2_grpc.AuditServiceStub) -> int:
        """Sends one batch, marks it delivered and quarantines what auditsvc refused; returns
        its size (0 when none is waiting)."""
        async with self._pool.acquire() as con, con.transaction():
            rows = await con.fetch(_CLAIM_BATCH, self._settings.batch_size)
            if not rows:
                return 0
            refused: dict[int, str] = {}
            sent: list[asyncpg.Record] = []
            events: list[audit_pb2.AuditEvent] = []
            for row in rows:
                try:
                    events.append(to_proto(orjson.loads(row["event"])))
                    sent.append(row)
                except (ValueError, json_format.ParseError) as exc:
                    refused[row["seq"]] = f"not an AuditEvent: {type(exc).__name__}"
                # One entry per step: a record naming 500 paths takes ~1 ms to convert, and a
                # batch of them in one step held the event loop for 10-15 ms.
                await asyncio.sleep(0)
            recorded = duplicates = 0
            if events:
                response = await stub.RecordEvents(
                    audit_pb2.RecordEventsRequest(events=events),
                    timeout=self._settings.rpc_timeout,
                )
                recorded, duplicates = response.recorded, response.duplicates
                for rejection in response.rejected:
                    if rejection.index < len(sent):
                        refused[sent[rejection.index]["seq"]] = rejection.reason
            if refused:
                await con.execute(_QUARANTINE, list(refused), list(refused.values()))
            delivered = [r["seq"] for r in rows if r["seq"] not in refused]
            await con.execute(_MARK_DELIVERED, delivered)
        self._delivered.inc(len(delivered))
        for seq, reason in refused.items():
            self._quarantined.inc()
            log.error("audit_entry_quarantined", outbox_seq=seq, reason=reason)
        log.info(
            "outbox_delivered",
            rows=len(rows),
            recorded=recorded,
            duplicates=duplicates,
            quarantined=len(refused),
        )
        return len(rows)

    async def quarantine_alarm(self) -> str | None:
        """A health detail (health.ALARMS) while refused entries wait for an operator."""
        try:
            async with asyncio.timeout(2.0):
                async with self._pool.acquire() as con:
                    count = await con.fetchval(_QUARANTINE_COUNT)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return None  # the database check reports an unreachable database
        if not count:
            return None
        return (
            f"audit outbox: {count} entries refused by auditsvc wait in "
            f"{self._schema}.audit_outbox_quarantine (see the reason column)"
        )

    async def health_check(self) -> str | None:
        """NOT_SERVING when the oldest undelivered row is older than OUTBOX_MAX_AGE_SECONDS."""
        try:
            async with asyncio.timeout(2.0):
                async with self._pool.acquire() as con:
                    row = await con.fetchrow(_BACKLOG)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return None  # the database check reports an unreachable database
        assert row is not None
        self._backlog.set(row["rows"])
        self._oldest_age.set(row["age"])
        if row["age"] > self._settings.max_age:
            return (
                f"audit outbox: {row['rows']} records undelivered, the oldest for "
                f"{row['age']:.0f}s (limit {self._settings.max_age:.0f}s); is auditsvc reachable "
                "at AUDITSVC_ADDR?"
            )
        return None
