"""The offload worker: out of the server's process, and behind it for the CPU."""

from __future__ import annotations

import math
import os

import pytest

from services.common.errors import ResourceExhausted
from services.common.offload import WORKER_NICENESS, Offload


def niceness() -> tuple[int, int]:
    return os.getpid(), os.nice(0)


async def test_large_work_runs_in_a_worker_at_a_lower_cpu_priority() -> None:
    """The worker is another process, WORKER_NICENESS nicer than the server: a busy machine
    slows the analysis, not the loop answering everyone else."""
    offload = Offload("test", inline_below_us=0)
    try:
        pid, nice = await offload.run(math.inf, niceness)
    finally:
        await offload.close()
    assert (pid != os.getpid(), nice) == (True, min(19, os.nice(0) + WORKER_NICENESS))


async def test_cheap_work_runs_inline() -> None:
    offload = Offload("test")
    assert await offload.run(1, niceness) == (os.getpid(), os.nice(0))


async def test_past_the_queue_limit_large_work_is_refused_by_name() -> None:
    offload = Offload("policysvc", inline_below_us=0, max_queued=0)
    with pytest.raises(ResourceExhausted, match="policysvc is analysing 0 other large requests"):
        await offload.run(math.inf, niceness)
