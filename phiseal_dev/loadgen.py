"""Load generation from separate client processes: closed loop or a fixed rate, ghz's statistics.

One client process is one Python interpreter: with a busy server on the same machine a single
process cannot keep a fast server busy, so load comes from ``processes`` spawned interpreters
(spawned, not forked: each builds its own gRPC objects), each with its own connections and its
share of the calls in flight and of the rate. Requests are serialized once and sent as bytes;
responses are not parsed (the benchmark checks one answer itself), so a client spends its time
on the transport, as ghz does.

Latency is measured as ghz measures it: from sending a call to its answer. In fixed-rate mode
each call is started at its scheduled time if a slot is free; calls that had to wait for one
are counted as ``late`` (a sign the rate is beyond what the client's in-flight limit allows).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

# A call that took longer than this after its scheduled start counts as late (fixed rate).
_LATE_SECONDS = 0.001


@dataclass(frozen=True)
class CallTarget:
    """One unary method on one server, and how to reach it."""

    address: str
    method: str  # "/package.Service/Method"
    request: bytes  # serialized once
    metadata: tuple[tuple[str, str], ...] = ()
    # PEM bytes; no root certificates means plaintext.
    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None  # ghz's "cname": the name the certificate must carry
    timeout: float | None = None
    max_message_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Load:
    """What one client process does."""

    target: CallTarget
    concurrency: int  # calls in flight at most
    connections: int = 1
    duration: float | None = 5.0  # seconds; None: until ``total`` calls
    total: int | None = None  # calls; None: until ``duration``
    rps: float | None = None  # fixed rate (this process's share); None: closed loop
    start_at: float = 0.0  # wall clock; every process starts together
    # Fractions of calls cancelled by the client mid-flight, or sent with a deadline that
    # passes while the server works (the memory run).
    cancel_fraction: float = 0.0
    deadline_fraction: float = 0.0
    seed: int = 0


@dataclass
class Outcome:
    """What a run produced (one process's, or several merged)."""

    latencies: list[float] = field(default_factory=list)  # seconds, every finished call
    statuses: Counter[str] = field(default_factory=Counter)  # "OK", "Unavailable", ...
    errors: Counter[str] = field(default_factory=Counter)  # "rpc error: code = ... desc = ..."
    elapsed: float = 0.0  # the longest process's wall time
    late: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def merge(self, other: Outcome) -> None:
        self.latencies.extend(other.latencies)
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.late += other.late

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0..100) of the latencies, nearest rank, in seconds."""
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[min(rank, len(ordered)) - 1]


def _status_name(code: Any) -> str:
    # ghz spells codes like Go's grpc: "OK", "Unavailable", "DeadlineExceeded".
    return (
        "".join(part.capitalize() for part in code.name.split("_")) if code.name != "OK" else "OK"
    )


async def _run(load: Load) -> Outcome:
    import grpc

    target = load.target
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", target.max_message_bytes),
        ("grpc.max_send_message_length", target.max_message_bytes),
        # Separate connections really are separate (ghz's --connections).
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if target.server_name:
        options.append(("grpc.ssl_target_name_override", target.server_name))
    channels = []
    for _ in range(max(1, load.connections)):
        if target.root_certificates is None:
            channels.append(grpc.aio.insecure_channel(target.address, options=options))
        else:
            credentials = grpc.ssl_channel_credentials(
                target.root_certificates, target.private_key, target.certificate_chain
            )
            channels.append(grpc.aio.secure_channel(target.address, credentials, options=options))
    # No serializers: bytes in, bytes out.
    calls = [c.unary_unary(target.method, None, None) for c in channels]
    outcome = Outcome()
    rng = random.Random(load.seed)  # noqa: S311 - which calls to cancel, not a secret
    metadata = list(target.metadata)

    async def one(index: int) -> None:
        call_fn = calls[index % len(calls)]
        roll = rng.random()
        timeout = target.timeout
        cancel_after: float | None = None
        if roll < load.deadline_fraction:
            timeout = rng.uniform(0.0005, 0.005)
        elif roll < load.deadline_fraction + load.cancel_fraction:
            cancel_after = rng.uniform(0.0, 0.005)
        started = time.perf_counter()
        call = call_fn(target.request, metadata=metadata, timeout=timeout)
        try:
            if cancel_after is None:
                await call
            else:
                await asyncio.wait_for(asyncio.shield(call), cancel_after)
            outcome.statuses["OK"] += 1
        except TimeoutError:  # only with cancel_after: the client gives up on the call
            call.cancel()
            outcome.statuses["Canceled"] += 1
            outcome.errors["rpc error: code = Canceled desc = the client cancelled the call"] += 1
        except grpc.aio.AioRpcError as exc:
            name, details = _status_name(exc.code()), exc.details() or ""
            outcome.statuses[name] += 1
            outcome.errors[f"rpc error: code = {name} desc = {details}"] += 1
        outcome.latencies.append(time.perf_counter() - started)

    # Connect every channel before the clock starts, as ghz does.
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    delay = load.start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    begun = time.perf_counter()
    ends = begun + load.duration if load.duration is not None else math.inf
    total = load.total if load.total is not None else math.inf
    issued = 0
    slots = asyncio.Semaphore(load.concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def slot(index: int) -> None:
        try:
            await one(index)
        finally:
            slots.release()

    while issued < total:
        if load.rps is not None:
            due = begun + issued / load.rps
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
        if time.perf_counter() >= ends:
            break
        await slots.acquire()
        if (
            load.rps is not None
            and time.perf_counter() - (begun + issued / load.rps) > _LATE_SECONDS
        ):
            outcome.late += 1
        task = asyncio.create_task(slot(issued))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        issued += 1
    if tasks:
        await asyncio.wait(tasks)
    outcome.elapsed = time.perf_counter() - begun
    for channel in channels:
        await channel.close(None)
    return outcome


def run_in_process(load: Load) -> Outcome:
    """One client process's share (the entry point of each spawned process)."""
    return asyncio.run(_run(load))


def split(load: Load, processes: int) -> list[Load]:
    """``load`` shared between ``processes``: calls in flight, connections, rate and total."""
    shares = []

    def part(n: int | None, i: int) -> int | None:
        return None if n is None else n // processes + (1 if i < n % processes else 0)

    for i in range(processes):

        def share(n: int | None, i: int = i) -> int | None:
            return part(n, i)

        shares.append(
            replace(
                load,
                concurrency=max(1, share(load.concurrency) or 0),
                connections=max(1, share(load.connections) or 0),
                total=share(load.total),
                rps=None if load.rps is None else load.rps / processes,
                seed=load.seed * 1000 + i,
            )
        )
    return shares


class ClientPool:
    """Spawned client processes kept for several runs (spawning one costs about a second)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor = concurrent.futures.ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn")
        )

    def run(self, load: Load, warmup: float = 1.0) -> Outcome:
        """Runs ``load`` split across every process, all starting at the same moment."""
        start_at = time.time() + warmup
        futures = [
            self._executor.submit(run_in_process, replace(share, start_at=start_at))
            for share in split(load, self.processes)
        ]
        merged = Outcome()
        for future in futures:
            merged.merge(future.result())
        return merged

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summary_percentiles() -> Sequence[float]:
    """The latency distribution ghz prints (with 99.9 as newer ghz versions do)."""
    return (10, 25, 50, 75, 90, 95, 99, 99.9)
