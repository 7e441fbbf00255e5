"""auditsvc settings, parsed once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.server.config import Env, ServerSettings

DEFAULT_PORT = 50054
# Development only: generated on first start when no key file exists (docs/audit.md), under
# PHISEAL_RUN_DIR (default .run).
DEFAULT_SIGNING_KEY_FILE = "auditsvc-signing-key.pem"


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    signing_key_file: Path
    checkpoint_interval: float
    partitions_ahead: int
    partition_interval: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            server=ServerSettings.from_env("auditsvc", DEFAULT_PORT, env),
            signing_key_file=Path(
                env.text("AUDITSVC_SIGNING_KEY_FILE", str(env.run_dir() / DEFAULT_SIGNING_KEY_FILE))
            ),
            checkpoint_interval=env.number(
                "AUDITSVC_CHECKPOINT_INTERVAL_SECONDS", 60.0, minimum=0.05
            ),
            partitions_ahead=env.integer("AUDITSVC_PARTITIONS_AHEAD", 2, minimum=1, maximum=24),
            partition_interval=env.number(
                "AUDITSVC_PARTITION_INTERVAL_SECONDS", 86_400.0, minimum=1.0
            ),
        )
