"""encryptsvc settings, parsed once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.server.config import Env, ServerSettings
from services.common.server.workers import default_workers
from services.encryptsvc.encryption import ERROR_RESERVE, Limits
from services.encryptsvc.envelope import MAX_CEK_USES

DEFAULT_PORT = 50053


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    policysvc_addr: str
    keysvc_addr: str
    limits: Limits
    # Past this many seconds without confirmation of freshness, refuse (UNAVAILABLE).
    max_staleness: float
    peer_timeout: float
    # Processes serving the same ports (services.common.server.workers); 1 serves in-process.
    workers: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        server = ServerSettings.from_env("encryptsvc", DEFAULT_PORT, env)
        # Every event's error result must fit beside the others in half a response at most.
        most_events = max(1, min(100_000, server.max_message_bytes // (2 * ERROR_RESERVE)))
        return cls(
            server=server,
            policysvc_addr=env.address("POLICYSVC_ADDR", "localhost:50152"),
            keysvc_addr=env.address("KEYSVC_ADDR", "localhost:50151"),
            limits=Limits(
                max_batch_events=env.integer(
                    "ENCRYPTSVC_MAX_BATCH_EVENTS",
                    min(1000, most_events),
                    minimum=1,
                    maximum=most_events,
                ),
                max_event_bytes=env.integer(
                    "ENCRYPTSVC_MAX_EVENT_BYTES", 256 * 1024, minimum=64, maximum=16 * 1024 * 1024
                ),
                max_depth=env.integer("ENCRYPTSVC_MAX_DEPTH", 32, minimum=2, maximum=512),
                # Lowered only by tests, to watch a content key roll over.
                max_cek_uses=env.integer(
                    "ENCRYPTSVC_MAX_CEK_USES", MAX_CEK_USES, minimum=1, maximum=MAX_CEK_USES
                ),
                max_event_output_bytes=env.integer(
                    "ENCRYPTSVC_MAX_EVENT_OUTPUT_BYTES",
                    min(1024 * 1024, server.max_message_bytes),
                    minimum=1024,
                    maximum=server.max_message_bytes,
                ),
                # A response larger than the server may send fails the whole batch.
                max_response_bytes=server.max_message_bytes,
            ),
            max_staleness=env.number("ENCRYPTSVC_MAX_STALENESS_SECONDS", 5.0, minimum=0.1),
            peer_timeout=env.number("ENCRYPTSVC_PEER_TIMEOUT_SECONDS", 2.0, minimum=0.05),
            workers=env.integer("ENCRYPTSVC_WORKERS", default_workers(), minimum=1, maximum=256),
        )
