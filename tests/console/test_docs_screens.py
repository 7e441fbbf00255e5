"""docs/console.md shows a committed picture of every screen the browser test photographs."""

from __future__ import annotations

import re

from tests.console.screens import SCREENS
from tests.console.stack import DOCS_SCREENS

PAGE = DOCS_SCREENS.parent / "console.md"


def test_every_screen_has_a_committed_picture_shown_in_the_docs() -> None:
    """Each screen in SCREENS is a PNG under docs/console/ and an image in docs/console.md,
    and the page shows no picture the test does not take."""
    shown = re.findall(r"!\[[^\]]*\]\(console/([a-z-]+)\.png\)", PAGE.read_text())
    committed = sorted(p.stem for p in DOCS_SCREENS.glob("*.png"))
    assert sorted(shown) == sorted(SCREENS)
    assert committed == sorted(SCREENS)
