"""The Node harness in interop/hpke-node: installed from its lockfile, called with JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "interop" / "hpke-node"
NodeCall = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def node() -> NodeCall:
    """Runs one harness operation; installs the pinned packages (`npm ci`) on first use."""
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("node is not installed: the HPKE interoperability tests need Node.js 18+")
    if not (HARNESS / "node_modules" / ".package-lock.json").exists():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not: install npm to run `npm ci`"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HARNESS, check=True, timeout=600)

    def call(op: str, **request: Any) -> dict[str, Any]:
        done = subprocess.run(
            [executable, "hpke.mjs"],
            cwd=HARNESS,
            input=json.dumps({"op": op, **request}).encode(),
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    return call
