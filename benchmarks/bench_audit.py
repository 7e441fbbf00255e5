"""auditsvc: records/s ingested through RecordEvents (batch sizes 1, 100, 500) and verified.

Runs a private PostgreSQL and an in-process auditsvc on loopback; prints medians over a few
rounds and the ratio of each batch size against single-event calls in the same run.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime

from google.protobuf import struct_pb2, timestamp_pb2
from phiseal.audit.v1 import audit_pb2, audit_pb2_grpc

from phiseal_dev.testing import PgCluster, start_service
from services.auditsvc import chain
from services.auditsvc.app import AuditServer
from services.auditsvc.audit_log import Event
from services.common.server.logging import configure_logging

ROUNDS = 3
RECORDS_PER_ROUND = 1000
BATCHES = (1, 100, 500)


def _event(workspace: str, n: int) -> audit_pb2.AuditEvent:
    details = struct_pb2.Struct()
    details.update({"fields": ["traits.email", "properties.dob"], "version": n})
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()),
        workspace_id=workspace,
        actor_user_id="bench@example.com",
        event_type="Destination Encryption Enabled",
        timestamp=stamp,
        outcome=audit_pb2.OUTCOME_SUCCEEDED,
        target=f"destination/dst_{n}",
        service="policysvc",
        details=details,
    )


async def _ingest(stub: audit_pb2_grpc.AuditServiceStub, batch: int) -> float:
    """Records/s for RECORDS_PER_ROUND events sent ``batch`` at a time into a fresh workspace."""
    workspace = f"ws_{uuid.uuid4().hex[:8]}"
    count = RECORDS_PER_ROUND if batch > 1 else RECORDS_PER_ROUND // 5
    events = [_event(workspace, i) for i in range(count)]
    started = time.perf_counter()
    for i in range(0, count, batch):
        await stub.RecordEvents(
            audit_pb2.RecordEventsRequest(events=events[i : i + batch]),
        )
    return count / (time.perf_counter() - started)


def _verify_rate(n: int) -> float:
    """Records/s through the pure verifier (what VerifyChain and the CLI run)."""
    at = datetime.now(UTC)
    records = []
    prev = chain.GENESIS_HASH
    for seq in range(1, n + 1):
        event = Event(
            event_id=str(uuid.uuid4()),
            workspace_id="ws",
            actor_user_id="bench",
            event_type="Key Pair Generated",
            timestamp=at,
            outcome="succeeded",
            details={"version": seq},
        )
        records.append(chain.seal(prev, event.fields(seq, at)))
        prev = records[-1].hash
    started = time.perf_counter()
    verdict = chain.verify(records, [], {})
    assert verdict.ok
    return n / (time.perf_counter() - started)


async def main() -> None:
    configure_logging("warning", "console")
    cluster = PgCluster.start()
    try:
        await cluster.build_template()
        url = await cluster.create_database()
        with tempfile.TemporaryDirectory() as tmp:
            service = await start_service(
                "auditsvc", url, {"AUDITSVC_SIGNING_KEY_FILE": f"{tmp}/key.pem"}
            )
            try:
                # RecordEvents is for services: the peer port, as keysvc (mutual TLS).
                stub = audit_pb2_grpc.AuditServiceStub(service.peer_channel("keysvc"))
                reader = audit_pb2_grpc.AuditServiceStub(service.channel())
                await _ingest(stub, 100)  # warm-up: connections, prepared statements
                rates = {b: [await _ingest(stub, b) for _ in range(ROUNDS)] for b in BATCHES}
                # One workspace of 5,000 records, verified end to end through the RPC.
                workspace = "ws_verify"
                events = [_event(workspace, i) for i in range(5000)]
                for i in range(0, len(events), 500):
                    await stub.RecordEvents(
                        audit_pb2.RecordEventsRequest(events=events[i : i + 500])
                    )
                # Every round signs every workspace, idle or not: its cost per workspace.
                spread = [_event(f"ws_cp_{i}", 0) for i in range(1000)]
                for i in range(0, len(spread), 500):
                    await stub.RecordEvents(
                        audit_pb2.RecordEventsRequest(events=spread[i : i + 500])
                    )
                assert isinstance(service.server, AuditServer)
                rounds = []
                for _ in range(ROUNDS):
                    started = time.perf_counter()
                    signed = await service.server.audit_log.checkpoint()
                    rounds.append((time.perf_counter() - started) / signed * 1000)
                live = []
                for _ in range(ROUNDS):
                    started = time.perf_counter()
                    answer = await reader.VerifyChain(
                        audit_pb2.VerifyChainRequest(workspace_id=workspace)
                    )
                    live.append(answer.records_checked / (time.perf_counter() - started))
            finally:
                await service.stop()
        single = statistics.median(rates[1])
        for batch in BATCHES:
            median = statistics.median(rates[batch])
            print(
                f"RecordEvents batch={batch:<4} median {median:9.0f} records/s  "
                f"({median / single:5.1f}x batch=1)"
            )
        verify = [_verify_rate(20_000) for _ in range(ROUNDS)]
        print(f"verify (pure, 20k records) median {statistics.median(verify):9.0f} records/s")
        print(
            f"VerifyChain (RPC, 5k stored records) median {statistics.median(live):9.0f} records/s"
        )
        print(
            f"checkpoint round (every workspace verified, signed, journaled) first "
            f"{rounds[0]:.3f} ms/workspace, idle median {statistics.median(rounds[1:]):.3f} "
            f"ms/workspace ({statistics.median(rounds[1:]) / rounds[0]:.2f}x the first)"
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
