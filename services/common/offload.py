"""CPU-heavy, pure work run off the event loop: in a worker process once it is large.

A thread would not free the loop: RE2 matching and the JSON walks hold the GIL, so a second
thread makes every loop step wait for the interpreter switch. A worker process leaves the loop
answering health checks, watch streams and other callers while a large request is analysed;
small work runs inline, where starting the worker would cost more than the work.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import structlog

from services.common.errors import ResourceExhausted, Unavailable

T = TypeVar("T")

# Work estimated below this many microseconds runs on the loop: a few milliseconds at most.
INLINE_BELOW_US = 2_000
# Large requests waiting for (or in) the worker; more are refused rather than queued without
# bound, each holding its input in memory.
MAX_QUEUED = 8
# How much lower the worker's CPU priority is than the server's (nice increment): when the
# machine is busy, a large analysis waits for the CPU rather than the loop answering GetPolicy,
# health checks and watch streams (measured: `python -m benchmarks cost`).
WORKER_NICENESS = 10

log = structlog.get_logger("offload")


class Offload:
    """Runs ``fn(*args)`` inline when cheap, else in a worker process (started on first use).

    ``fn`` and its arguments must be picklable: a module-level function of plain values.
    Domain errors it raises reach the caller unchanged.
    """

    def __init__(
        self,
        name: str,
        *,
        workers: int = 1,
        inline_below_us: float = INLINE_BELOW_US,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._name = name
        self._workers = workers
        self._inline_below_us = inline_below_us
        self._max_queued = max_queued
        self._queued = 0
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, cost_us: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``; ``cost_us`` is the caller's estimate of the work in microseconds."""
        if cost_us < self._inline_below_us:
            return fn(*args)
        if self._queued >= self._max_queued:
            raise ResourceExhausted(
                f"{self._name} is analysing {self._queued} other large requests, the most it "
                "queues; retry shortly or send a smaller request"
            )
        self._queued += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor(), functools.partial(fn, *args))
        except BrokenProcessPool:
            # The worker died (killed, out of memory): the next call starts a fresh one.
            log.error("offload_worker_lost", service=self._name)
            self._pool = None
            raise Unavailable(f"{self._name} lost its analysis worker; retry") from None
        finally:
            self._queued -= 1

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: a forked copy of a process running gRPC threads can deadlock.
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lower_priority,
            )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _lower_priority() -> None:
    """Runs first in each worker process."""
    os.nice(WORKER_NICENESS)
