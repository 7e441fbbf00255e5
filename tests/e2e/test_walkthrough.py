"""docs/walkthrough.md runs as printed: its shell blocks, in order, against `make run`'s stack."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.stack import ROOT, RunningStack

pytestmark = pytest.mark.slow

WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
SAMPLES = ROOT / "tests" / "data" / "sample_events.jsonl"


def shell_blocks(markdown: str) -> list[str]:
    """The ```sh blocks, in order: what a reader pastes into one shell."""
    return re.findall(r"^```sh\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def jsonl(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_walkthrough_runs_as_printed(dev_stack: RunningStack) -> None:
    """Every command of the walkthrough succeeds; what it decrypts (before and after the
    rotation) equals the sample events; the old key does not open .v2; the chain verifies;
    the private keys are owner-only under the run folder."""
    blocks = shell_blocks(WALKTHROUGH.read_text())
    assert len(blocks) >= 4, "the walkthrough lost its shell blocks"
    script = "set -eo pipefail\n" + "\n".join(blocks)
    ran = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=dev_stack.env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    out = dev_stack.run_dir / "walkthrough"
    keys = dev_stack.run_dir / "keys"
    originals = jsonl(SAMPLES)
    assert jsonl(out / "decrypted.jsonl") == originals
    assert jsonl(out / "opened.jsonl") == originals
    assert jsonl(out / "decrypted.v1.jsonl") == originals
    assert jsonl(out / "decrypted.v2.jsonl") == originals
    assert json.loads((out / "out.v2.json").read_text())["kid"].endswith(".v2")
    assert "key.v1.pem does not open .v2 ciphertext" in ran.stdout
    assert json.loads((out / "verify.json").read_text())["ok"] is True
    modes = {p: stat.S_IMODE((keys / p).stat().st_mode) for p in ("key.v1.pem", "key.v2.pem")}
    assert (modes, stat.S_IMODE(keys.stat().st_mode)) == (
        {"key.v1.pem": 0o600, "key.v2.pem": 0o600},
        0o700,
    )
