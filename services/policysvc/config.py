"""policysvc settings, parsed once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.data.outbox_relay import RelaySettings
from services.common.server.config import Env, ServerSettings

DEFAULT_PORT = 50052


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    auditsvc_addr: str
    outbox: RelaySettings
    # How often WatchPolicies confirms that its change feed is live.
    watch_heartbeat_seconds: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            server=ServerSettings.from_env("policysvc", DEFAULT_PORT, env),
            auditsvc_addr=env.address("AUDITSVC_ADDR", "localhost:50154"),
            outbox=RelaySettings.from_env(env),
            watch_heartbeat_seconds=env.number(
                "POLICYSVC_WATCH_HEARTBEAT_SECONDS", 1.0, minimum=0.05
            ),
        )
