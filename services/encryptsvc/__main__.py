"""``python -m services.encryptsvc``."""

from services.common.server.main import run_service
from services.encryptsvc.app import build
from services.encryptsvc.config import Settings

if __name__ == "__main__":
    run_service("encryptsvc", Settings.from_env, build)
