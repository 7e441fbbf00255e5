"""The benchmark's server processes never outlive the benchmark (benchmarks/processes.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PARENT = """
import asyncio, os
from benchmarks.processes import start_server

async def main() -> None:
    server = await start_server("echo", "benchmarks.baseline_server", ["echo"], {})
    print(server.process.pid, flush=True)
    os._exit(1)  # a crash: nothing stops the server

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose here (it takes no CPU); only init can reap it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_crashed_benchmark_takes_its_servers_with_it() -> None:
    """A benchmark that died once left six servers running, taking CPU from every later run;
    the kernel now sends them SIGTERM when the benchmark's process dies."""
    done = subprocess.run(
        [sys.executable, "-c", _PARENT],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    pid = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(pid)
    if alive:
        os.kill(pid, 9)
    assert not alive, "the server outlived the benchmark that started it"
