"""``python -m services.policysvc``."""

from services.common.server.main import run_service
from services.policysvc.app import build
from services.policysvc.config import Settings

if __name__ == "__main__":
    run_service("policysvc", Settings.from_env, build)
