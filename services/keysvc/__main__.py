"""``python -m services.keysvc``."""

from services.common.server.main import run_service
from services.keysvc.app import build
from services.keysvc.config import Settings

if __name__ == "__main__":
    run_service("keysvc", Settings.from_env, build)
