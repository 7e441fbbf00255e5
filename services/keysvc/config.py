"""keysvc settings, parsed once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.data.outbox_relay import RelaySettings
from services.common.server.config import Env, ServerSettings

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    policysvc_addr: str
    auditsvc_addr: str
    # How long a pending (AFTER_CONFIRMATION) version waits for ConfirmKey before it expires.
    pending_key_ttl: float
    # How often pending versions past their deadline are marked expired and announced.
    expiry_sweep_interval: float
    # How often WatchKeys confirms its feed is live (HEARTBEAT).
    watch_heartbeat_interval: float
    policysvc_timeout: float
    outbox: RelaySettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            server=ServerSettings.from_env("keysvc", DEFAULT_PORT, env),
            policysvc_addr=env.address("POLICYSVC_ADDR", "localhost:50152"),
            auditsvc_addr=env.address("AUDITSVC_ADDR", "localhost:50154"),
            pending_key_ttl=env.number("KEYSVC_PENDING_KEY_TTL_SECONDS", 86_400.0, minimum=0.1),
            expiry_sweep_interval=env.number("KEYSVC_EXPIRY_SWEEP_SECONDS", 30.0, minimum=0.05),
            watch_heartbeat_interval=env.number(
                "KEYSVC_WATCH_HEARTBEAT_SECONDS", 1.0, minimum=0.05
            ),
            policysvc_timeout=env.number("KEYSVC_POLICYSVC_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            outbox=RelaySettings.from_env(env),
        )
