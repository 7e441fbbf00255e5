"""Fixtures for the console: the whole stack, and a Chromium browser per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, async_playwright

from phiseal_dev.testing import session_secrets
from tests.conftest import StartService
from tests.console.stack import NO_CHROMIUM, ConsoleStack, chromium_path, start_stack
from tests.console.web_client import https


@pytest_asyncio.fixture
async def stack(start: StartService, tmp_path: Path) -> AsyncIterator[ConsoleStack]:
    dev_token = tmp_path / "admin.token"
    dev_token.write_text(session_secrets().admin_token("dev-admin"))
    running = await start_stack(start, CONSOLE_DEV_TOKEN_FILE=str(dev_token))
    yield running
    await running.console.stop()


@pytest_asyncio.fixture
async def client(stack: ConsoleStack) -> AsyncIterator[httpx.AsyncClient]:
    """HTTPS to the console trusting the development CA."""
    async with https(stack) as http:
        yield http


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.skip(NO_CHROMIUM)
    async with async_playwright() as playwright:
        # --no-sandbox: the tests run as root (CI does), where Chromium's sandbox cannot start.
        launched = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh profile: the console's certificate is from the development CA, which this
    Chromium does not trust, so certificate errors are ignored for it alone."""
    ctx = await browser.new_context(
        ignore_https_errors=True, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    yield ctx
    await ctx.close()
