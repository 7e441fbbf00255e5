"""keysvc settings, parsed once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import Env, ServerSettings
from services.common.outbox_relay import RelaySettings

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    policysvc_addr: str
    auditsvc_addr: str
    outbox: RelaySettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            server=ServerSettings.from_env("keysvc", DEFAULT_PORT, env),
            policysvc_addr=env.address("POLICYSVC_ADDR", "localhost:50052"),
            auditsvc_addr=env.address("AUDITSVC_ADDR", "localhost:50054"),
            outbox=RelaySettings.from_env(env),
        )
