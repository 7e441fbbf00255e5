"""Settings are parsed once and a bad value stops start-up with a message naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.common.server.config import ConfigError
from services.keysvc.config import Settings as KeySettings


def test_defaults() -> None:
    """With nothing set, keysvc listens on 50051 and finds its peers' mTLS ports on localhost."""
    settings = KeySettings.from_env({})
    assert (settings.server.port, settings.policysvc_addr, settings.auditsvc_addr) == (
        50051,
        "localhost:50152",
        "localhost:50154",
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KEYSVC_PORT": "fifty"}, "KEYSVC_PORT"),
        ({"KEYSVC_PORT": "70000"}, "KEYSVC_PORT"),
        ({"POLICYSVC_ADDR": "nohostport"}, "POLICYSVC_ADDR"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"SHUTDOWN_GRACE_SECONDS": "soon"}, "SHUTDOWN_GRACE_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    """Each malformed setting raises ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=named):
        KeySettings.from_env(env)


def test_bad_setting_fails_process_start_up() -> None:
    """`python -m services.keysvc` with a bad port exits 2 and says which variable is wrong."""
    result = subprocess.run(
        [sys.executable, "-m", "services.keysvc"],
        env={"KEYSVC_PORT": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KEYSVC_PORT='abc' is not a whole number" in result.stderr


def test_missing_database_url_fails_start_up_clearly() -> None:
    """Without DATABASE_URL a database-backed service refuses to start and says what to do."""
    result = subprocess.run(
        [sys.executable, "-m", "services.keysvc"],
        env={"KEYSVC_PORT": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "DATABASE_URL is not set" in result.stderr
