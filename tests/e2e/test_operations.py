"""The operator's first ten minutes against `make run`'s stack: the demo tells the whole story,
every service's /metrics moves while it does, and the Node client decrypts what encryptsvc made."""

from __future__ import annotations

import asyncio
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from phiseal.common.v1 import common_pb2
from phiseal.keys.v1 import keys_pb2
from phiseal.policy.v1 import policy_pb2

from phiseal_dev.demo import FIELDS, Stack
from tests.e2e.stack import ROOT, RunningStack

pytestmark = pytest.mark.slow

NODE_EXAMPLE = ROOT / "examples" / "node"


def run_demo(stack: RunningStack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phiseal_dev.demo"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_demo_tells_the_whole_story(dev_stack: RunningStack) -> None:
    """`make demo` against the running stack: every step succeeds, the key files are 0600, the
    rotation shows .v2 while v1 still opens old ciphertext, and the chain verifies."""
    demo = run_demo(dev_stack)
    assert demo.returncode == 0, demo.stdout + demo.stderr + dev_stack.log_tail()
    for line in (
        "HIPAA eligible",
        "mode 600",
        "4 events decrypted",
        "key v1 still opens the batch sent before the rotation",
        "key v1 does not open the new batch",
        "chain verified",
    ):
        assert line in demo.stdout
    assert any(".v2" in line and "next batch" in line for line in demo.stdout.splitlines())
    keys = sorted((dev_stack.run_dir / "keys").glob("*.pem"))
    assert keys, "no private key saved"
    assert {stat.S_IMODE(k.stat().st_mode) for k in keys} == {0o600}


def test_metrics_move_on_every_endpoint(dev_stack: RunningStack) -> None:
    """Each service's /metrics answers, and its numbers rise while the demo works the stack:
    RPC calls, encryptsvc cache lookups, fields and data keys, outbox deliveries, audit records
    and checkpoints; the database pool is visible."""
    names = ("keysvc", "policysvc", "encryptsvc", "auditsvc")
    before = {name: dev_stack.scrape(name) for name in names}
    demo = run_demo(dev_stack)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    after = {name: dev_stack.scrape(name) for name in names}

    def grew(service: str, prefix: str) -> bool:
        def total(samples: dict[str, float]) -> float:
            return sum(v for k, v in samples.items() if k.startswith(prefix))

        return total(after[service]) > total(before[service])

    moved = {
        (service, prefix): grew(service, prefix)
        for service, prefix in [
            *((name, "phiseal_rpc_calls_total") for name in names),
            *((name, "phiseal_rpc_duration_seconds_count") for name in names),
            ("encryptsvc", 'phiseal_encrypt_cache_lookups_total{cache="policies",result="miss"'),
            ("encryptsvc", 'phiseal_encrypt_cache_lookups_total{cache="keys",result="miss"'),
            ("encryptsvc", "phiseal_encrypt_events_total"),
            ("encryptsvc", "phiseal_encrypt_fields_encrypted_total"),
            ("encryptsvc", "phiseal_encrypt_data_keys_total"),
            ("encryptsvc", "phiseal_encrypt_data_key_uses_total"),
            ("keysvc", "phiseal_audit_outbox_delivered_total"),
            ("policysvc", "phiseal_audit_outbox_delivered_total"),
            ("auditsvc", "phiseal_audit_records_total"),
            ("auditsvc", "phiseal_audit_checkpoints_signed_total"),
        ]
    }
    assert [k for k, v in moved.items() if not v] == []
    for service in ("keysvc", "policysvc", "auditsvc"):
        assert after[service]["phiseal_db_pool_max_connections"] >= 1
        assert 'phiseal_db_pool_connections{state="idle"}' in after[service]
    for service in ("keysvc", "policysvc"):
        assert "phiseal_audit_outbox_backlog" in after[service]
    assert after["auditsvc"]["phiseal_audit_chain_workspaces_in_alarm"] == 0
    ok = 'phiseal_rpc_calls_total{code="OK",rpc="/phiseal.encrypt.v1.EncryptService/EncryptEvents"}'
    assert after["encryptsvc"][ok] > before["encryptsvc"].get(ok, 0)


async def _destination_with_key(stack: RunningStack, keys_dir: Path) -> tuple[str, Path]:
    """A HIPAA workspace, a destination encrypting FIELDS, and its X25519 private key file."""
    client = Stack(stack.secrets, stack.services)
    try:
        ws = (
            await client.policy.CreateWorkspace(policy_pb2.CreateWorkspaceRequest(name="Node"))
        ).workspace.workspace_id
        await client.policy.SetHipaaEligibility(
            policy_pb2.SetHipaaEligibilityRequest(
                workspace_id=ws, eligible=True, baa_reference="BAA-NODE"
            )
        )
        dst = (
            await client.policy.CreateDestination(
                policy_pb2.CreateDestinationRequest(
                    workspace_id=ws,
                    name="Node webhook",
                    type=policy_pb2.DESTINATION_TYPE_EVENT_STREAM_CLOUD_MODE,
                )
            )
        ).destination.destination_id
        await client.policy.SetClassification(
            policy_pb2.SetClassificationRequest(
                workspace_id=ws,
                override=policy_pb2.PathOverride(
                    path="properties.copay", classification=policy_pb2.CLASSIFICATION_YELLOW
                ),
            )
        )
        generated = await client.keys.GenerateKeyPair(
            keys_pb2.GenerateKeyPairRequest(
                destination_id=dst, algorithm=common_pb2.KEY_ALGORITHM_X25519
            )
        )
        await client.policy.EnableEncryption(
            policy_pb2.EnableEncryptionRequest(destination_id=dst, fields=list(FIELDS))
        )
    finally:
        await client.close()
    key = keys_dir / f"{dst}.v1.pem"
    key.write_text(generated.private_key.private_key_pem)
    key.chmod(0o600)
    return dst, key


def test_node_client_decrypts_what_encryptsvc_produced(
    dev_stack: RunningStack, tmp_path: Path
) -> None:
    """examples/node: grpc-js calls EncryptEvents over mutual TLS and jose opens every value
    (X25519, ECDH-ES+A256KW) with the private key alone, equal to the original."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js is not installed: examples/node was not run (install node and npm)")
    if not (NODE_EXAMPLE / "node_modules").exists():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_EXAMPLE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert installed.returncode == 0, installed.stderr
    dst, key = asyncio.run(_destination_with_key(dev_stack, tmp_path))
    ran = subprocess.run(
        [node, "encrypt_and_decrypt.mjs", dst, str(key)],
        cwd=NODE_EXAMPLE,
        env={
            **dev_stack.env,
            "ENCRYPTSVC_ADDR": f"localhost:{dev_stack.services['encryptsvc'].peer_port}",
            "PHISEAL_TLS_DIR": str(dev_stack.secrets),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"kid {dst}.v1" in ran.stdout
    assert "16 of 16 events equal their originals" in ran.stdout
    opened = int(ran.stdout.split("jose: ")[1].split()[0])
    assert opened >= 16
