"""Settings are parsed once and a bad value stops start-up with a message naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.auditsvc.config import Settings as AuditSettings
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


def test_metrics_port_sits_beside_the_service_port() -> None:
    """/metrics defaults to the service port + 300, follows a moved service port, and -1
    turns it off."""
    moved = KeySettings.from_env({"KEYSVC_PORT": "41051"}).server.metrics_port
    off = KeySettings.from_env({"KEYSVC_METRICS_PORT": "-1"}).server.metrics_port
    assert (KeySettings.from_env({}).server.metrics_port, moved, off) == (50351, 41351, None)


def test_every_development_path_follows_the_run_dir() -> None:
    """PHISEAL_RUN_DIR moves the TLS folder and auditsvc's signing key (which used to stay
    under ./.run whatever the setting)."""
    env = {"PHISEAL_RUN_DIR": "/srv/phiseal-run"}
    audit = AuditSettings.from_env(env)
    assert (audit.server.security.secrets_dir, audit.signing_key_file) == (
        Path("/srv/phiseal-run/dev-secrets"),
        Path("/srv/phiseal-run/auditsvc-signing-key.pem"),
    )


def test_tests_never_put_metrics_beside_a_fixed_service_port() -> None:
    """A test that fixes a service's port (a free_port() it checked) still gets ephemeral health
    and metrics ports: port + 300 was never checked, and once another process held it
    (test_api's stack failed to start with "Address already in use")."""
    from phiseal_dev.testing import service_env
    from services.policysvc.config import Settings as PolicySettings

    env = service_env("policysvc", None, {"POLICYSVC_PORT": "41051"})
    server = PolicySettings.from_env(env).server
    assert (server.port, server.health_port, server.metrics_port) == (41051, 0, 0)
