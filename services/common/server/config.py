"""Settings from the environment: parsed once at start-up, failing fast with a clear message.

Nothing else in the code base reads ``os.environ``; each service's ``config.py`` builds its
frozen ``Settings`` from these helpers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Relative to the working directory, like every default path; PHISEAL_RUN_DIR moves them all.
DEFAULT_RUN_DIR = ".run"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and the fix."""


class Env:
    """Typed reads of environment variables that name the variable in every error."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def text(self, name: str, default: str) -> str:
        return self._environ.get(name, default).strip() or default

    def run_dir(self) -> Path:
        """``PHISEAL_RUN_DIR``: where development state lives (secrets, keys, the database)."""
        return Path(self.text("PHISEAL_RUN_DIR", DEFAULT_RUN_DIR))

    def optional_text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**31) -> int:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}={value} is out of range: use {minimum}..{maximum}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number (seconds, e.g. 2.5)") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} must be at least {minimum}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in {"1", "true", "yes", "on"}:
            return True
        if raw in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")
        return value

    def address(self, name: str, default: str) -> str:
        value = self.text(name, default)
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}={value!r} is not host:port (e.g. localhost:50052)")
        return value


@dataclass(frozen=True)
class SecuritySettings:
    """Transport and caller authentication (docs/security.md)."""

    # Plaintext service port and no authentication: only when explicitly asked for.
    insecure: bool = False
    # ca.pem, <service>.pem, <service>-key.pem and the token public key live here.
    secrets_dir: Path = Path(".run/dev-secrets")
    token_public_key: Path | None = None  # default: <secrets_dir>/token-signing.pub.pem
    token_issuer: str = "phiseal-dev"
    token_audience: str = "phiseal"
    clock_skew_seconds: float = 60.0
    allow_wildcard_tokens: bool = True

    @classmethod
    def from_env(cls, env: Env) -> SecuritySettings:
        public_key = env.optional_text("PHISEAL_TOKEN_PUBLIC_KEY")
        return cls(
            insecure=env.flag("PHISEAL_INSECURE", False),
            secrets_dir=Path(env.text("PHISEAL_TLS_DIR", str(env.run_dir() / "dev-secrets"))),
            token_public_key=Path(public_key) if public_key else None,
            token_issuer=env.text("PHISEAL_TOKEN_ISSUER", "phiseal-dev"),
            token_audience=env.text("PHISEAL_TOKEN_AUDIENCE", "phiseal"),
            clock_skew_seconds=env.number("PHISEAL_TOKEN_CLOCK_SKEW_SECONDS", 60.0),
            allow_wildcard_tokens=env.flag("PHISEAL_TOKEN_ALLOW_WILDCARD", True),
        )

    @property
    def token_public_key_path(self) -> Path:
        return self.token_public_key or self.secrets_dir / "token-signing.pub.pem"


@dataclass(frozen=True)
class ServerSettings:
    """What every service needs to serve: where to listen, the database, logging, shutdown."""

    service: str
    host: str
    port: int
    database_url: str | None
    log_level: str
    log_format: str
    grace_seconds: float
    db_check_interval: float
    db_pool_min: int
    db_pool_max: int
    db_connect_timeout: float
    # Mutual-TLS port for peer services (with security on); 0 picks a free one.
    peer_port: int = 0
    # Plaintext port serving only grpc.health.v1.Health; None: no such port.
    health_port: int | None = None
    # Plaintext HTTP port serving Prometheus metrics at /metrics; None: no such port.
    metrics_port: int | None = None
    security: SecuritySettings = field(default_factory=SecuritySettings)
    # Largest request or response message, in bytes (grpc answers RESOURCE_EXHAUSTED above it).
    max_message_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls, service: str, default_port: int, env: Env) -> ServerSettings:
        prefix = service.upper()
        port = env.integer(f"{prefix}_PORT", default_port, minimum=0, maximum=65535)
        # Beside the service port by default (50052 → 50152, 50252, 50352); ephemeral alongside 0.
        peer_default = port + 100 if 0 < port <= 65335 else 0
        health_default = port + 200 if 0 < port <= 65335 else 0
        health_port = env.integer(
            f"{prefix}_HEALTH_PORT", health_default, minimum=-1, maximum=65535
        )
        metrics_default = port + 300 if 0 < port <= 65235 else 0
        metrics_port = env.integer(
            f"{prefix}_METRICS_PORT", metrics_default, minimum=-1, maximum=65535
        )
        return cls(
            service=service,
            host=env.text(f"{prefix}_HOST", env.text("PHISEAL_HOST", "127.0.0.1")),
            port=port,
            peer_port=env.integer(f"{prefix}_PEER_PORT", peer_default, minimum=0, maximum=65535),
            health_port=None if health_port == -1 else health_port,
            metrics_port=None if metrics_port == -1 else metrics_port,
            security=SecuritySettings.from_env(env),
            max_message_bytes=env.integer(
                "PHISEAL_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, minimum=1024, maximum=256 * 1024**2
            ),
            database_url=env.optional_text("DATABASE_URL"),
            log_level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_format=env.choice("LOG_FORMAT", "auto", ("auto", "json", "console")),
            grace_seconds=env.number("SHUTDOWN_GRACE_SECONDS", 5.0),
            db_check_interval=env.number("DB_CHECK_INTERVAL_SECONDS", 1.0, minimum=0.05),
            db_pool_min=env.integer("DB_POOL_MIN", 1, minimum=0, maximum=100),
            db_pool_max=env.integer("DB_POOL_MAX", 10, minimum=1, maximum=200),
            db_connect_timeout=env.number("DB_CONNECT_TIMEOUT_SECONDS", 30.0),
        )

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set: point it at PostgreSQL "
                "(e.g. postgresql://user@localhost:5432/phiseal), or use `make run`, "
                "which starts a private PostgreSQL"
            )
        return self.database_url
