"""The page in a real browser: headless Chromium (Playwright) against a real server.

Skipped, saying why, where there is no Playwright or no Chromium: ``pip install
playwright`` and either ``playwright install chromium`` or a system Chromium
(``/usr/bin/chromium``, or the path in ``CHROMIUM``).
"""

import os
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="no Playwright here: pip install playwright"
)


def chromium() -> str | None:
    """A Chromium to drive: $CHROMIUM, the system's, or None for Playwright's own."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


async def test_the_page_in_chromium(client: TestClient) -> None:
    async with playwright_api.async_playwright() as p:
        try:
            browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        except playwright_api.Error as exc:
            pytest.skip(f"no Chromium to run: {str(exc).splitlines()[0]}")
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(str(client.make_url("/")), timeout=10_000)
{%- if cookiecutter.include_example == "yes" %}
            # Not logged in: the login form; then the page connects and shows the clock.
            await page.fill("#login-name", "alice", timeout=5_000)
            await page.click("#login-form button")
            await page.wait_for_function(
                "document.querySelector('#clock').textContent.includes(':')"
                " && !document.querySelector('#clock').textContent.includes('-')",
                timeout=10_000,
            )
{%- else %}
            assert "It works" in await page.content()
{%- endif %}
            assert errors == []
        finally:
            await browser.close()
