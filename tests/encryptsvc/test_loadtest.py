"""loadtest/*.json in ghz's format, and the bundled runner that prints ghz's summary of them."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from phiseal_dev.loadgen import ClientPool
from phiseal_dev.loadtest import LOADTEST_DIR, LoadTestError, load_file, seconds, summary
from phiseal_dev.testing import session_secrets
from tests.encryptsvc.conftest import Stack

FILES = sorted(LOADTEST_DIR.glob("*.json"))
ROOT = LOADTEST_DIR.parent


def test_every_loadtest_file_is_a_ghz_config_for_encrypt_events() -> None:
    """Each file names the proto, the call, mutual TLS files and realistic JSON events."""
    assert [f.name for f in FILES] == [
        "encrypt-closed.json",
        "encrypt-rate.json",
        "encrypt-single.json",
    ]
    for path in FILES:
        config = orjson.loads(path.read_bytes())
        assert (config["proto"], config["call"], sorted(config["data"])) == (
            "protos/phiseal/encrypt/v1/encrypt.proto",
            "phiseal.encrypt.v1.EncryptService.EncryptEvents",
            ["destination_id", "events"],
        )
        events = [orjson.loads(base64.b64decode(e)) for e in config["data"]["events"]]
        assert all(isinstance(e, dict) and e["messageId"] for e in events)
        assert {"cacert", "cert", "key", "host", "concurrency", "duration"} <= set(config)


def test_durations_are_read_as_ghz_writes_them() -> None:
    """ "60s", "500ms" and "2m" are durations; anything else is refused naming the key."""
    assert [seconds("60s", "d"), seconds("500ms", "d"), seconds("2m", "d")] == [60, 0.5, 120]
    with pytest.raises(LoadTestError, match='"duration"'):
        seconds("60", "duration")


def test_templates_are_refused_rather_than_sent_literally(tmp_path: Path) -> None:
    """ghz's {{.RequestNumber}} templates are not supported: the runner says so."""
    config = orjson.loads(FILES[0].read_bytes())
    config["metadata"] = {"x-request-id": "{{.RequestNumber}}"}
    path = tmp_path / "t.json"
    path.write_bytes(orjson.dumps(config))
    with pytest.raises(LoadTestError, match="templates"):
        load_file(path, base=ROOT)


async def test_the_runner_runs_a_file_against_encryptsvc_and_prints_ghz_summary(
    stack: Stack, tmp_path: Path
) -> None:
    """A file pointed at a real encryptsvc (mutual TLS as producer): every call OK, and the
    summary has ghz's sections."""
    secrets = session_secrets().folder
    config = orjson.loads((LOADTEST_DIR / "encrypt-single.json").read_bytes())
    config.update(
        host=stack.encrypt.peer_address,
        cacert=str(secrets / "ca.pem"),
        cert=str(secrets / "producer.pem"),
        key=str(secrets / "producer-key.pem"),
        concurrency=4,
    )
    config["data"]["destination_id"] = stack.destination_id
    path = tmp_path / "single.json"
    path.write_bytes(orjson.dumps(config))
    _, load = load_file(path, base=ROOT)
    load = replace(load, duration=None, total=20)
    with ClientPool(2) as pool:
        outcome = await asyncio.to_thread(pool.run, load, 0.5)
    text = summary(outcome)
    assert (outcome.count, dict(outcome.statuses)) == (20, {"OK": 20})
    for section in ("Summary:", "Requests/sec:", "Latency distribution:", "99.9 % in"):
        assert section in text
    assert "[OK]\t20 responses" in text
