"""The redaction processor is the choke point for secrets and PHI in logs."""

from __future__ import annotations

import io
import json

import asyncpg
import pytest
import structlog

from services.common.server.logging import REDACTED, configure_logging, redact, safe_db_error

PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIExample\n-----END PRIVATE KEY-----"


def test_secret_keys_are_redacted() -> None:
    """Keys that name secrets lose their values, nested too."""
    event = redact(None, "info", {"event": "x", "passphrase": "hunter2", "nested": {"token": "t"}})
    assert event == {"event": "x", "passphrase": REDACTED, "nested": {"token": REDACTED}}


def test_private_key_material_is_redacted_under_any_key() -> None:
    """A PEM private key is dropped even under an innocent-looking key."""
    event = redact(None, "info", {"event": "x", "detail": PEM})
    assert event["detail"] == REDACTED


def test_bytes_are_summarised_not_logged() -> None:
    """Raw bytes (event bodies, key material) become their length."""
    event = redact(None, "info", {"event": "x", "body": b'{"email":"a@b.c"}'})
    assert event["body"] == "<17 bytes>"


def test_configured_chain_applies_redaction() -> None:
    """The production chain renders JSON with secrets removed."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.get_logger().info("key_generated", private_key_pem=PEM, destination_id="d1")
    line = json.loads(stream.getvalue())
    assert (line["private_key_pem"], line["destination_id"]) == (REDACTED, "d1")


def test_exceptions_are_logged_as_their_type() -> None:
    """Exception text can quote row values: only the type survives."""
    event = redact(None, "error", {"event": "x", "error": ValueError("jane@example.com")})
    assert event["error"] == "ValueError"


def test_bearer_text_is_redacted_under_any_key() -> None:
    event = redact(None, "info", {"event": "x", "header": "Bearer abc.def.ghi"})
    assert event["header"] == REDACTED


async def test_safe_db_error_keeps_only_sqlstate_and_constraint(database_url: str) -> None:
    """A unique violation's DETAIL echoes the value; safe_db_error drops it."""
    con = await asyncpg.connect(database_url)
    try:
        await con.execute("CREATE TEMP TABLE people (email text CONSTRAINT people_email UNIQUE)")
        await con.execute("INSERT INTO people VALUES ('jane@example.com')")
        with pytest.raises(asyncpg.UniqueViolationError) as caught:
            await con.execute("INSERT INTO people VALUES ('jane@example.com')")
    finally:
        await con.close()
    assert safe_db_error(caught.value) == "database error SQLSTATE 23505 (constraint people_email)"


def test_safe_db_error_for_other_exceptions_names_the_type() -> None:
    assert safe_db_error(OSError("host db.internal refused")) == "database error (OSError)"


def test_every_value_renders_as_one_json_line() -> None:
    """orjson renders the lines; what it refuses (an integer past 64 bits, a lone surrogate)
    still renders, and so do non-text keys and objects JSON has no type for."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = structlog.get_logger()
    log.info("big", count=2**70, by_code={1: "a"}, thing=object(), text="é")
    log.info("small", count=3, by_code={2: "b"})
    # A lone surrogate (a JSON path may carry one, escaped): orjson refuses it, json escapes it.
    log.info("odd", path="traits.\ud800")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert third["path"] == "traits.\ud800"
    assert (first["count"], first["by_code"], first["text"]) == (2**70, {"1": "a"}, "é")
    assert first["thing"].startswith("<object")
    assert (second["count"], second["by_code"]) == (3, {"2": "b"})


@pytest.mark.parametrize(
    "value",
    [
        "see eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijkl for details",
        "Authorization: BeArEr abc.def",
        f"key: {PEM}",
    ],
)
def test_the_quick_check_lets_no_secret_pattern_through(value: str) -> None:
    """Values are first screened by one search for what every secret pattern starts with; a
    value that starts one is still redacted (in any letter case for bearer)."""
    rendered = redact(None, "info", {"event": "x", "detail": value})["detail"]
    for secret in ("eyJzdWIi", "abc.def", "PRIVATE"):
        assert secret not in rendered


_WRITER = """
import sys
import structlog
from services.common.server.logging import configure_logging
configure_logging("info", "json")
log = structlog.get_logger()
for i in range(400):
    log.info("line", writer=sys.argv[1], i=i, pad="x" * 200)
"""


def test_processes_sharing_a_pipe_never_split_a_line() -> None:
    """Worker processes log to one pipe (the supervisor's stderr). Each line must reach it in
    one write: with PYTHONUNBUFFERED=1 (usual in containers) print() wrote the text and its
    newline separately, and two workers' lines ran together ('{...}{...}')."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    read_end, write_end = os.pipe()
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(n)], stderr=write_end, env=env)
        for n in range(4)
    ]
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    assert all(writer.wait(30) == 0 for writer in writers)
    lines = output.decode().splitlines()
    assert len(lines) == 1600
    assert all(json.loads(line)["event"] == "line" for line in lines)
