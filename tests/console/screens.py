"""Screenshots of the console's screens: every run's go to test-artifacts/console/ (git-ignored);
with PHISEAL_CONSOLE_DOCS=1 they are also copied to docs/console/ for docs/console.md."""

from __future__ import annotations

import os
import shutil

from playwright.async_api import Page

from tests.console.stack import ARTIFACTS, DOCS_SCREENS

# Every screen the end-to-end test photographs, in the order docs/console.md shows them.
SCREENS = (
    "signin",
    "workspaces",
    "workspace",
    "destinations",
    "destination-not-encryptable",
    "classification",
    "data-encryption",
    "private-key",
    "regenerate-challenge",
    "key-versions",
    "turn-off",
    "policy-versions",
    "audit-log",
    "error",
)


# Elements whose content is secret: the private key shown once, on these screens.
SECRET_FIELDS = "#private-key-pem"
SECRET_SCREENS = frozenset({"private-key", "regenerate-challenge"})


async def shoot(page: Page, name: str, *, full_page: bool = True) -> None:
    assert name in SCREENS, f"add {name!r} to SCREENS (and to docs/console.md)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # The mask must find the key where one is shown (a renamed element would uncover it).
    secrets = await page.locator(SECRET_FIELDS).count()
    assert (secrets > 0) == (name in SECRET_SCREENS), f"{name}: {secrets} secret fields"
    # A delivered private key is covered (here and in the committed copies): a throwaway
    # test key, but a key all the same, and docs must not teach that one belongs in a picture.
    await page.screenshot(
        path=str(path),
        full_page=full_page,
        mask=[page.locator(SECRET_FIELDS)],
        mask_color="#c8ccd4",
    )
    if os.environ.get("PHISEAL_CONSOLE_DOCS") == "1":
        DOCS_SCREENS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENS / path.name)
