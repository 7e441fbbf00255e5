"""auditsvc settings, parsed once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.server.config import Env, ServerSettings

DEFAULT_PORT = 50054
# Development files, relative to PHISEAL_RUN_DIR (default .run): the signing key (generated on
# first start only with AUDITSVC_SIGNING_KEY_GENERATE), the trusted keys and the journal.
DEFAULT_SIGNING_KEY_FILE = "auditsvc-signing-key.pem"
DEFAULT_TRUSTED_KEYS_FILE = "auditsvc-trusted-keys.json"
DEFAULT_JOURNAL_FILE = "auditsvc-checkpoints.jsonl"


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    signing_key_file: Path
    # Development only (make run, tests): make the key (and trust it) when the file is missing.
    generate_signing_key: bool
    trusted_keys_file: Path
    journal_file: Path
    checkpoint_interval: float
    partitions_ahead: int
    partition_interval: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        run_dir = env.run_dir()
        return cls(
            server=ServerSettings.from_env("auditsvc", DEFAULT_PORT, env),
            signing_key_file=Path(
                env.text("AUDITSVC_SIGNING_KEY_FILE", str(run_dir / DEFAULT_SIGNING_KEY_FILE))
            ),
            generate_signing_key=env.flag("AUDITSVC_SIGNING_KEY_GENERATE", False),
            trusted_keys_file=Path(
                env.text("AUDITSVC_TRUSTED_KEYS_FILE", str(run_dir / DEFAULT_TRUSTED_KEYS_FILE))
            ),
            journal_file=Path(
                env.text("AUDITSVC_JOURNAL_FILE", str(run_dir / DEFAULT_JOURNAL_FILE))
            ),
            checkpoint_interval=env.number(
                "AUDITSVC_CHECKPOINT_INTERVAL_SECONDS", 60.0, minimum=0.05
            ),
            partitions_ahead=env.integer("AUDITSVC_PARTITIONS_AHEAD", 2, minimum=1, maximum=24),
            partition_interval=env.number(
                "AUDITSVC_PARTITION_INTERVAL_SECONDS", 86_400.0, minimum=1.0
            ),
        )
