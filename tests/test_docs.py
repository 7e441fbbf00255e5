"""The README stays short, every documentation link resolves, every setting is documented."""

from __future__ import annotations

import importlib
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
MAX_README_LINES = 150

# Inline links and images, [text](target "title"); reference-style links are not used.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks, with inline code spans blanked."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(INLINE_CODE.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    kept = []
    for char in text.strip().lower():
        category = unicodedata.category(char)
        if char in " -_" or category[0] in "LN":
            kept.append("-" if char == " " else char)
    return "".join(kept)


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(1).replace("`", ""))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path):
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:
                links.append(target)
    return links


def test_readme_is_short() -> None:
    """A newcomer reads the README in five minutes: at most 150 lines; the rest is in docs/."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it to {MAX_README_LINES} and move detail "
        "into a page under docs/ (linked from the README and docs/README.md)"
    )


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link names an existing file, and its #anchor an existing heading."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme_and_the_index() -> None:
    """Each page under docs/ is reachable from README.md and from docs/README.md."""
    index = DOCS / "README.md"
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    from_readme = {Path(t.partition("#")[0]).name for t in relative_links(README)}
    from_index = {Path(t.partition("#")[0]).name for t in relative_links(index)}
    assert sorted(pages - from_readme) == []
    assert sorted(pages - from_index) == []
    assert "README.md" in from_readme  # docs/README.md, the index


class RecordingEnviron(dict[str, str]):
    """An empty environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def settings_variables() -> dict[str, set[str]]:
    """Each service's variables, read by calling its Settings.from_env on a recording mapping."""
    found = {}
    for config in sorted((ROOT / "services").glob("*/config.py")):
        module = importlib.import_module(f"services.{config.parent.name}.config")
        settings = getattr(module, "Settings", None)
        if settings is None:
            continue
        environ = RecordingEnviron()
        settings.from_env(environ)
        found[config.parent.name] = environ.asked
    return found


def test_settings_variables_are_found() -> None:
    """The recording sees the four services and what they all share (guards the next test)."""
    found = settings_variables()
    assert sorted(found) == ["auditsvc", "console", "encryptsvc", "keysvc", "policysvc"]
    services = [asked for name, asked in found.items() if name != "console"]
    assert all({"DATABASE_URL", "PHISEAL_INSECURE"} <= asked for asked in services)
    assert "CONSOLE_SESSION_KEY_FILE" in found["console"]
    assert "KEYSVC_PENDING_KEY_TTL_SECONDS" in found["keysvc"]


def test_every_setting_is_documented() -> None:
    """Every variable a Settings.from_env reads appears, in backticks, in docs/configuration.md."""
    documented = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(
        f"{name} (read by {service})"
        for service, asked in settings_variables().items()
        for name in asked
        if f"`{name}`" not in documented
    )
    assert missing == []
