"""`make run`'s stack: four services on TLS + mTLS come up, answer grpcurl with the printed
credentials, talk to each other only over mutual TLS, and stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from phiseal_dev.localpg import free_port
from phiseal_dev.testing import eventually

GRPCURL = Path(sys.executable).parent / "grpcurl"
NAMES = ("keysvc", "policysvc", "encryptsvc", "auditsvc")
CONSOLE_SEES = ("policysvc", "keysvc", "encryptsvc", "auditsvc")


def grpcurl(*args: str, data: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(GRPCURL), *args]
    if data is not None:
        command[1:1] = ["-d", json.dumps(data)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


class Stack:
    """How a person reaches the stack: the printed CA, the admin token, the ports."""

    def __init__(self, secrets: Path, ports: dict[str, dict[str, int]]) -> None:
        self.secrets = secrets
        self.ports = ports
        self.token = (secrets / "admin.token").read_text().strip()

    def as_admin(self, service: str, *args: str, data: dict[str, Any] | None = None) -> Any:
        """One call over TLS with the admin token; the JSON reply."""
        result = grpcurl(*self.tls(service), *args, data=data)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip().startswith("{") else result

    def tls(self, service: str) -> Sequence[str]:
        return [
            "-cacert",
            str(self.secrets / "ca.pem"),
            "-H",
            f"authorization: Bearer {self.token}",
            f"localhost:{self.ports[service]['port']}",
        ]


@pytest.mark.slow
def test_stack_serves_over_tls_and_mtls_and_stops_on_sigterm() -> None:
    """A private PostgreSQL, four services and the console start; TLS + token and mTLS work,
    the console sees every service serving, plaintext and certificate-less peer calls fail, a
    key generation (keysvc → policysvc) and its audit record (keysvc → auditsvc) flow over
    mTLS; SIGTERM ends them all with exit code 0."""
    # Not pytest's tmp_path: its 0700 root folders are unreachable for the unprivileged
    # PostgreSQL user, and concurrent pytest sessions reset their modes.
    tmp_path = Path(tempfile.mkdtemp(prefix="phiseal-devstack-"))
    ports = {
        name: {"port": free_port(), "peer": free_port(), "health": free_port()} for name in NAMES
    }
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PGHOST"}}
    for name, p in ports.items():
        env[f"{name.upper()}_PORT"] = str(p["port"])
        env[f"{name.upper()}_PEER_PORT"] = str(p["peer"])
        env[f"{name.upper()}_HEALTH_PORT"] = str(p["health"])
    env.update(
        {
            "PHISEAL_RUN_DIR": str(tmp_path),
            "PHISEAL_PG_PORT": str(free_port()),
            "OUTBOX_POLL_SECONDS": "0.2",
            "CONSOLE_PORT": str(console_port := free_port()),
        }
    )
    log_path = tmp_path / "devstack.log"
    log_file = log_path.open("w")
    stack = subprocess.Popen(
        [sys.executable, "-m", "phiseal_dev.devstack"],
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
        assert "PHIseal is up" in banner, log_path.read_text()[-3000:]
        s = Stack(tmp_path / "dev-secrets", ports)
        console = httpx.get(
            f"https://localhost:{console_port}/healthz",
            verify=ssl.create_default_context(cafile=str(s.secrets / "ca.pem")),
        ).json()
        listed = {name: s.as_admin(name, "list").stdout.split() for name in NAMES}
        health = grpcurl(
            "-plaintext", f"localhost:{ports['keysvc']['health']}", "grpc.health.v1.Health/Check"
        ).stdout
        plaintext = grpcurl("-plaintext", f"localhost:{ports['policysvc']['port']}", "list")
        no_client_cert = grpcurl(
            "-cacert", str(s.secrets / "ca.pem"), f"localhost:{ports['policysvc']['peer']}", "list"
        )
        producer = grpcurl(
            "-cacert",
            str(s.secrets / "ca.pem"),
            "-cert",
            str(s.secrets / "producer.pem"),
            "-key",
            str(s.secrets / "producer-key.pem"),
            f"localhost:{ports['encryptsvc']['peer']}",
            "list",
        )
        # keysvc asks policysvc (mTLS) whether the destination is real; both relays deliver
        # their audit records to auditsvc (mTLS).
        workspace = s.as_admin(
            "policysvc",
            "phiseal.policy.v1.PolicyService/CreateWorkspace",
            data={"name": "Acme Health"},
        )["workspace"]["workspace_id"]
        s.as_admin(
            "policysvc",
            "phiseal.policy.v1.PolicyService/SetHipaaEligibility",
            data={"workspace_id": workspace, "eligible": True, "baa_reference": "BAA-1"},
        )
        destination = s.as_admin(
            "policysvc",
            "phiseal.policy.v1.PolicyService/CreateDestination",
            data={
                "workspace_id": workspace,
                "name": "Webhook",
                "type": "DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE",
            },
        )["destination"]["destination_id"]
        generated = s.as_admin(
            "keysvc",
            "phiseal.keys.v1.KeyService/GenerateKeyPair",
            data={"destination_id": destination},
        )
        expected = {"Workspace HIPAA Eligibility Modified", "Destination Encryption Keys Generated"}

        async def audit_types() -> set[str]:
            page = await asyncio.to_thread(
                s.as_admin,
                "auditsvc",
                "phiseal.audit.v1.AuditService/QueryEvents",
                data={"filter": {"workspace_id": workspace}},
            )
            seen = {r["event"]["event_type"] for r in page.get("records", [])}
            assert expected <= seen, f"audit records seen: {sorted(seen)}"
            return seen

        audited = asyncio.run(eventually(audit_types, timeout=30, interval=0.3))
        stack.send_signal(signal.SIGTERM)
        code = stack.wait(timeout=60)
    finally:
        if stack.poll() is None:
            # SIGTERM first: devstack's children live in their own sessions and would outlive
            # a SIGKILL of devstack as orphans.
            stack.send_signal(signal.SIGTERM)
            try:
                stack.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stack.kill()
    assert listed["policysvc"] == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "phiseal.policy.v1.PolicyService",
    ]
    assert all("grpc.health.v1.Health" in names for names in listed.values())
    assert '"status": "SERVING"' in health
    assert (plaintext.returncode != 0, no_client_cert.returncode != 0, producer.returncode) == (
        True,
        True,
        0,
    )
    assert generated["key"]["version"] == 1
    assert f"The console: https://localhost:{console_port}" in banner
    assert console == {"status": "SERVING", "services": dict.fromkeys(CONSOLE_SEES, "SERVING")}
    assert {"Workspace HIPAA Eligibility Modified", "Destination Encryption Keys Generated"} <= (
        audited
    )
    log_file.close()
    assert code == 0, log_path.read_text()[-3000:]
