"""``python -m services.auditsvc``."""

from services.auditsvc.app import build
from services.auditsvc.config import Settings
from services.common.server.main import run_service

if __name__ == "__main__":
    run_service("auditsvc", Settings.from_env, build)
