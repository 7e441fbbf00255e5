"""``python -m services.encryptsvc``: ENCRYPTSVC_WORKERS processes (default: one per CPU)."""

from services.common.server.main import run_service
from services.encryptsvc.app import SERVICE_NAME, build
from services.encryptsvc.config import Settings

if __name__ == "__main__":
    run_service(
        "encryptsvc",
        Settings.from_env,
        build,
        workers=lambda settings: settings.workers,
        service_names=[SERVICE_NAME],
    )
