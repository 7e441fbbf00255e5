"""Console settings, parsed once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.server.config import ConfigError, Env, SecuritySettings

DEFAULT_PORT = 8443


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    # The four services' person-facing (TLS, bearer token) ports: not their mutual-TLS peer ports.
    policysvc_addr: str
    keysvc_addr: str
    auditsvc_addr: str
    encryptsvc_addr: str
    # ca.pem (trusted for the services) and token-signing.pub.pem (sign-in checks) live here.
    security: SecuritySettings
    # The console's own HTTPS certificate and key (Secure cookies need HTTPS).
    tls_cert: Path
    tls_key: Path
    # 32 random bytes sealing session cookies; None: a fresh key per process (sessions end with
    # the process, and replicas need a shared file).
    session_key_file: Path | None
    session_max_seconds: int
    # A bearer token file offered as "development sign-in"; only `make run` sets it.
    dev_token_file: Path | None
    rpc_timeout: float
    log_level: str
    log_format: str

    @property
    def ca_cert(self) -> Path:
        return self.security.secrets_dir / "ca.pem"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        security = SecuritySettings.from_env(env)
        secrets = security.secrets_dir
        key_file = env.optional_text("CONSOLE_SESSION_KEY_FILE")
        dev_token = env.optional_text("CONSOLE_DEV_TOKEN_FILE")
        settings = cls(
            host=env.text("CONSOLE_HOST", env.text("PHISEAL_HOST", "127.0.0.1")),
            port=env.integer("CONSOLE_PORT", DEFAULT_PORT, minimum=0, maximum=65535),
            policysvc_addr=env.address("CONSOLE_POLICYSVC_ADDR", "localhost:50052"),
            keysvc_addr=env.address("CONSOLE_KEYSVC_ADDR", "localhost:50051"),
            auditsvc_addr=env.address("CONSOLE_AUDITSVC_ADDR", "localhost:50054"),
            encryptsvc_addr=env.address("CONSOLE_ENCRYPTSVC_ADDR", "localhost:50053"),
            security=security,
            tls_cert=Path(env.text("CONSOLE_TLS_CERT", str(secrets / "console.pem"))),
            tls_key=Path(env.text("CONSOLE_TLS_KEY", str(secrets / "console-key.pem"))),
            session_key_file=Path(key_file) if key_file else None,
            session_max_seconds=env.integer(
                "CONSOLE_SESSION_MAX_SECONDS", 8 * 3600, minimum=60, maximum=24 * 3600
            ),
            dev_token_file=Path(dev_token) if dev_token else None,
            rpc_timeout=env.number("CONSOLE_RPC_TIMEOUT_SECONDS", 15.0, minimum=0.1),
            log_level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_format=env.choice("LOG_FORMAT", "auto", ("auto", "json", "console")),
        )
        if security.insecure:
            raise ConfigError(
                "PHISEAL_INSECURE=true: the console calls the services only over TLS and "
                "serves only HTTPS (its cookies are Secure); unset it for the console"
            )
        return settings
