"""The four services and the console, in-process on ephemeral ports, and a headless Chromium.

The browser is Debian's ``chromium`` driven by Playwright (its own browser downloads are not
used); without it the browser tests skip, saying how to install it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from phiseal_dev.pki import DevPki
from phiseal_dev.testing import DevSecrets, RunningService, session_secrets
from services.console.app import ConsoleServer
from services.console.config import Settings
from tests.conftest import StartService
from tests.encryptsvc.stack import wait_serving

ROOT = Path(__file__).resolve().parents[2]
# Git-ignored: every run's screenshots and downloads, kept for a person (or CI) to look at.
ARTIFACTS = ROOT / "test-artifacts" / "console"
# The committed copies shown in docs/console.md.
DOCS_SCREENS = ROOT / "docs" / "console"
NO_CHROMIUM = (
    "Chromium is not installed: the console's browser tests need Debian's `chromium` "
    "(`apt-get install -y chromium`; `make install` does it when run as root), or set "
    "PHISEAL_CHROMIUM to a Chromium binary"
)


def chromium_path() -> str | None:
    return os.environ.get("PHISEAL_CHROMIUM") or shutil.which("chromium")


@dataclass
class ConsoleStack:
    auditsvc: RunningService
    policysvc: RunningService
    keysvc: RunningService
    encryptsvc: RunningService
    console: ConsoleServer
    secrets: DevSecrets

    @property
    def url(self) -> str:
        return self.console.url


def console_settings(
    services: dict[str, RunningService], secrets: DevSecrets, **extra: str
) -> Settings:
    DevPki(secrets.folder).ensure(["console"])
    env = {
        "CONSOLE_HOST": "127.0.0.1",
        "CONSOLE_PORT": "0",
        "PHISEAL_TLS_DIR": str(secrets.folder),
        "CONSOLE_RPC_TIMEOUT_SECONDS": "30",
        **{f"CONSOLE_{name.upper()}_ADDR": s.address for name, s in services.items()},
        **extra,
    }
    return Settings.from_env(env)


async def start_stack(start: StartService, **console_env: str) -> ConsoleStack:
    """auditsvc, policysvc (relaying its audit outbox), keysvc, encryptsvc, then the console."""
    auditsvc = await start("auditsvc")
    relay = {"AUDITSVC_ADDR": auditsvc.peer_address, "OUTBOX_POLL_SECONDS": "0.1"}
    policysvc = await start("policysvc", **relay)
    keysvc = await start("keysvc", POLICYSVC_ADDR=policysvc.peer_address, **relay)
    encryptsvc = await start(
        "encryptsvc",
        POLICYSVC_ADDR=policysvc.peer_address,
        KEYSVC_ADDR=keysvc.peer_address,
        ENCRYPTSVC_MAX_STALENESS_SECONDS="2",
    )
    await wait_serving(encryptsvc.channel())
    services = {
        "auditsvc": auditsvc,
        "policysvc": policysvc,
        "keysvc": keysvc,
        "encryptsvc": encryptsvc,
    }
    secrets = session_secrets()
    console = ConsoleServer(console_settings(services, secrets, **console_env))
    await console.start()
    return ConsoleStack(auditsvc, policysvc, keysvc, encryptsvc, console, secrets)
