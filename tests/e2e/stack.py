"""`make run`'s stack as a test fixture: devstack in a subprocess on free ports, its own run dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from phiseal_dev.devstack import SERVICES, Service
from phiseal_dev.localpg import free_port
from services.common.server.workers import WORKER_METRICS_STEP, worker_metrics_port

ROOT = Path(__file__).resolve().parents[2]
ENCRYPTSVC_WORKERS = 2


def free_metrics_base(workers: int) -> int:
    """A free port whose worker offsets (+100 k) are free too."""
    for _ in range(100):
        base = free_port()
        ports = [base + WORKER_METRICS_STEP * k for k in range(1, workers)]
        if any(port > 65535 for port in ports):
            continue
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free metrics ports for the encryptsvc workers")


class RunningStack:
    """Four services and a private PostgreSQL, as ``make run`` starts them."""

    def __init__(self) -> None:
        # Not pytest's tmp_path: its 0700 root folders are unreachable for the unprivileged
        # PostgreSQL user, and concurrent pytest sessions reset their modes.
        self.run_dir = Path(tempfile.mkdtemp(prefix="phiseal-stack-"))
        self.services = {
            s.name: Service(
                s.name,
                free_port(),
                free_port(),
                free_port(),
                free_metrics_base(ENCRYPTSVC_WORKERS) if s.name == "encryptsvc" else free_port(),
            )
            for s in SERVICES
        }
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PGHOST"}}
        for s in self.services.values():
            prefix = s.name.upper()
            env[f"{prefix}_PORT"] = str(s.port)
            env[f"{prefix}_PEER_PORT"] = str(s.peer_port)
            env[f"{prefix}_HEALTH_PORT"] = str(s.health_port)
            env[f"{prefix}_METRICS_PORT"] = str(s.metrics_port)
        # Two encryptsvc workers, as on this 2-CPU machine's default: worker k serves /metrics
        # on the metrics port + 100 k, and scrape() sums them as Prometheus sums instances.
        env["ENCRYPTSVC_WORKERS"] = str(ENCRYPTSVC_WORKERS)
        env.update(
            {
                "PHISEAL_RUN_DIR": str(self.run_dir),
                "PHISEAL_PG_PORT": str(free_port()),
                "OUTBOX_POLL_SECONDS": "0.2",
                # Checkpoints within a test's time, so their counter can be seen to move.
                "AUDITSVC_CHECKPOINT_INTERVAL_SECONDS": "0.5",
            }
        )
        self.env = env
        self.log_path = self.run_dir / "devstack.log"
        self._process: subprocess.Popen[str] | None = None

    @property
    def secrets(self) -> Path:
        return self.run_dir / "dev-secrets"

    def start(self, within: float = 180) -> None:
        log = self.log_path.open("w")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "phiseal_dev.devstack"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert self._process.stdout is not None
        banner = ""
        deadline = time.monotonic() + within
        while "Ctrl-C stops everything" not in banner and time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                break
            banner += line
        if "PHIseal is up" not in banner:
            self.stop()
            raise AssertionError(f"the stack did not start:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def scrape(self, service: str) -> dict[str, float]:
        """One scrape of ``service``'s /metrics (every encryptsvc worker's, summed): sample name
        with labels → value."""
        base = self.services[service].metrics_port
        workers = ENCRYPTSVC_WORKERS if service == "encryptsvc" else 1
        samples: dict[str, float] = {}
        for index in range(workers):
            url = f"http://127.0.0.1:{worker_metrics_port(base, index)}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = reply.read().decode()
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    samples[name] = samples.get(name, 0.0) + float(value)
        return samples

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGTERM: devstack stops its children (own sessions) and PostgreSQL in order.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
