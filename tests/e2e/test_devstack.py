"""`make run`'s stack: all four services come up, answer grpcurl, and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from services.common.localpg import free_port

GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.mark.slow
def test_stack_serves_and_stops_on_sigterm() -> None:
    """A private PostgreSQL and four services start; SIGTERM ends them all with exit code 0."""
    # Not pytest's tmp_path: its 0700 root folders are unreachable for the unprivileged
    # PostgreSQL user, and concurrent pytest sessions reset their modes.
    tmp_path = Path(tempfile.mkdtemp(prefix="phiseal-devstack-"))
    ports = {name: free_port() for name in ("keysvc", "policysvc", "encryptsvc", "auditsvc")}
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PGHOST"}}
    env.update({f"{n.upper()}_PORT": str(p) for n, p in ports.items()})
    env.update({"PHISEAL_RUN_DIR": str(tmp_path), "PHISEAL_PG_PORT": str(free_port())})
    log_path = tmp_path / "devstack.log"
    log_file = log_path.open("w")
    stack = subprocess.Popen(
        [sys.executable, "-m", "services.devstack"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
    )
    try:
        assert stack.stdout is not None
        banner = ""
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in banner and time.monotonic() < deadline:
            line = stack.stdout.readline()
            if not line:
                break
            banner += line
        assert "PHIseal is up" in banner
        listed = {
            name: subprocess.run(
                [str(GRPCURL), "-plaintext", f"localhost:{port}", "list"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
            for name, port in ports.items()
        }
        health = subprocess.run(
            [
                str(GRPCURL),
                "-plaintext",
                f"localhost:{ports['keysvc']}",
                "grpc.health.v1.Health/Check",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        stack.send_signal(signal.SIGTERM)
        code = stack.wait(timeout=60)
    finally:
        if stack.poll() is None:
            stack.kill()
    assert listed["policysvc"] == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "phiseal.policy.v1.PolicyService",
    ]
    assert all("grpc.health.v1.Health" in names for names in listed.values())
    assert '"status": "SERVING"' in health
    log_file.close()
    assert code == 0, log_path.read_text()[-3000:]
