"""encryptsvc's memory over a long run in which a fifth of the calls are cancelled or time out.

encryptsvc (one worker, TLS, mutual TLS) under a closed-loop load from client processes at batch
100: 10% of the calls are cancelled by the client 0-5 ms after sending, 10% carry a deadline of
0.5-5 ms that passes while the server works. Memory must stay flat: a call abandoned mid-batch
must leave nothing behind (no task, no cached batch, no growing map). Prints the server's RSS
after a warm-up and every slice, and the change from start to end.
BENCH_MEMORY_SECONDS sets the length (default 60), split into 6 slices.
"""

from __future__ import annotations

import asyncio
import os

from benchmarks.bench_encrypt import (
    CLIENTS,
    METHOD,
    control_plane,
    encryptsvc_env,
    request_bytes,
)
from benchmarks.processes import rss_bytes, start_server
from phiseal_dev.loadgen import ClientPool, Load, Outcome
from phiseal_dev.testing import PgCluster
from services.common.server.logging import configure_logging

SECONDS = float(os.environ.get("BENCH_MEMORY_SECONDS", "60"))
SLICES = 6


async def main() -> None:
    configure_logging("warning", "json")
    cluster = PgCluster.start()
    try:
        await cluster.build_template()
        await run(await cluster.create_database())
    finally:
        cluster.stop()


async def run(url: str) -> None:
    peers, destinations, _ = await control_plane(url)
    server = await start_server(
        "encryptsvc",
        "services.encryptsvc",
        [],
        {**encryptsvc_env(peers, 1), "LOG_LEVEL": "warning"},
    )
    pool = ClientPool(CLIENTS)
    try:
        load = Load(
            target=server.target(METHOD, request_bytes(destinations["rsa"], 100)),
            concurrency=CLIENTS * 16,
            connections=CLIENTS,
            duration=SECONDS / SLICES,
            cancel_fraction=0.1,
            deadline_fraction=0.1,
        )
        # Warm-up: caches, connections, allocator arenas.
        await asyncio.to_thread(pool.run, load)
        start = rss_bytes(server.pid)
        print(f"{SECONDS:g} s at batch 100, 10% cancelled and 10% past their deadline")
        print(f"RSS after warm-up: {start / 2**20:.1f} MiB (load average {os.getloadavg()[0]:.1f})")
        total = Outcome()
        for i in range(SLICES):
            outcome = await asyncio.to_thread(pool.run, load)
            total.merge(outcome)
            rss = rss_bytes(server.pid)
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(outcome.statuses.items()))
            print(f"  slice {i + 1}: RSS {rss / 2**20:.1f} MiB; {statuses}", flush=True)
        end = rss_bytes(server.pid)
        print(
            f"RSS start {start / 2**20:.1f} MiB, end {end / 2**20:.1f} MiB "
            f"({(end - start) / 2**20:+.1f} MiB, {100 * (end - start) / start:+.1f}%) over "
            f"{total.count} calls"
        )
    finally:
        pool.close()
        await server.stop()
        for peer in peers:
            await peer.stop()
