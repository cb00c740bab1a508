"""tz.js in a real browser: headless Debian Chromium against `tranzit run`.

The fixture project (tests/fixtures/browserproject) serves a page that uses
`/static/tranzit/tz.js` both ways: the modern client on the page's own `/ws`
and the old `new TZ(url, callbacks)` form on the standalone websocket port.
The test reads what the page shows, kills the server, starts it again on the
same ports and checks that the page reconnects by itself.

The client's pure logic is tested without a browser by `node --test tests/js/`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import CHROMIUM, browser_page, free_port

PROJECT = Path(__file__).parent / "fixtures" / "browserproject"
SCREENSHOT = Path("/tmp/tzjs.png")
ECHO = "Привет, 世界 🚀 «ёж»"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt package 'chromium')"
    ),
]


class Server:
    """`python -m tranzit run --project PROJECT` on fixed ports, restartable."""

    def __init__(self, log: Path) -> None:
        self.http_port = free_port()
        self.ws_port = free_port()
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        env = dict(
            os.environ,
            TRANZIT_HTTP_HOST="127.0.0.1",
            TRANZIT_HTTP_PORT=str(self.http_port),
            TRANZIT_WS_HOST="127.0.0.1",
            TRANZIT_WS_PORT=str(self.ws_port),
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tranzit", "run", "--project", str(PROJECT)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"tranzit run exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        pytest.fail(f"{self.base}/healthz did not answer within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: the browser sees the connection die, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "server.log")
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


def test_tzjs_in_chromium(server: Server) -> None:
    from playwright.sync_api import expect

    with browser_page() as (page, page_errors):
        page.goto(f"{server.base}/?ws_port={server.ws_port}")
        assert page.evaluate("new URL(tz.url).pathname") == "/ws"
        assert page.evaluate("tz.url") == f"ws://127.0.0.1:{server.http_port}/ws"

        expect(page.locator("#status")).to_have_text("open")
        expect(page.locator("#opens")).to_have_text("1")
        # Text form: an endless old-style rule keeps pushing `get_hello|HELLO!`.
        page.wait_for_function("Number(document.getElementById('hello').textContent) >= 3")
        # Text form split exactly like the server: 'привет', ' world' (space kept).
        expect(page.locator("#shout")).to_have_text("2: ПРИВЕТ/ WORLD")
        # JSON form: the result round-trips Cyrillic, CJK and emoji intact.
        expect(page.locator("#echo")).to_have_text(ECHO)
        # An old-style handler called in JSON form: data messages, then result.
        expect(page.locator("#count")).to_have_text("1,2,3 → done")
        errors = page.locator("#errors li")
        expect(errors.filter(has_text="error unknown_rule no_such_rule")).to_have_count(1)
        expect(errors.filter(has_text="call unknown_rule nope")).to_have_count(1)
        # The old API against the standalone websocket port.
        page.wait_for_function("Number(document.getElementById('legacy').textContent) >= 2")

        page.click("#call-btn")
        expect(page.locator("#calls li")).to_have_text(["1: again 1 ✓"])

        server.kill()
        expect(page.locator("#status")).to_have_text("closed 1006")
        # The endless `wait` call was in flight: it is rejected, not left hanging.
        expect(errors.filter(has_text="call disconnected wait")).to_have_count(1)
        # A call made while disconnected waits in the queue for the next socket.
        page.click("#call-btn")
        hello_before = int(page.locator("#hello").text_content() or "0")
        legacy_before = int(page.locator("#legacy").text_content() or "0")

        server.start()
        expect(page.locator("#opens")).to_have_text("2", timeout=20_000)
        expect(page.locator("#status")).to_have_text("open")
        expect(page.locator("#calls li")).to_have_text(["1: again 1 ✓", "2: again 2 ✓"])
        page.click("#call-btn")
        expect(page.locator("#calls li")).to_have_text(
            ["1: again 1 ✓", "2: again 2 ✓", "3: again 3 ✓"]
        )
        page.wait_for_function(
            f"Number(document.getElementById('hello').textContent) >= {hello_before + 2}"
        )
        page.wait_for_function(
            f"Number(document.getElementById('legacy').textContent) >= {legacy_before + 2}",
            timeout=20_000,
        )
        expect(errors.filter(has_text="error unknown_rule no_such_rule")).to_have_count(2)
        expect(page.locator("#echo")).to_have_text(ECHO)

        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert page_errors == []
