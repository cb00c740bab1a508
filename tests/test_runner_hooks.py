"""Every runner honours an app's ``setup(app)`` and ``ws_connect``: real processes on 127.0.0.1.

The runners: the dev server (``tranzit run``), the 2018 ``python main.py``
(``MainServer`` with its own middleware), the ``ws`` role and the ``http`` role
under gunicorn. Each serves a project whose ``setup(app)`` adds a middleware
answering ``/probe`` and whose ``ws_connect`` wants a token.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets.sync.client
from support import clean_env, free_port, wait_http
from websockets.exceptions import InvalidStatus

ROUTES = """
from aiohttp import web

from tranzit.app import ROLE


@web.middleware
async def probe(request, handler):
    if request.path == "/probe":
        return web.Response(text=f"setup ran for the {request.app[ROLE]} app")
    return await handler(request)


def setup(app):
    app.middlewares.append(probe)


def ws_connect(request):
    if request.query.get("token") != "let-me-in":
        raise web.HTTPUnauthorized(text="401: no token\\n")
    return "tok"


def whoami(conn):
    return conn.user


ws_rules = {"whoami": whoami}
"""

MAIN = """
import os

from aiohttp import web
from tranzit.web import MainServer


@web.middleware
async def stamp(request, handler):
    response = await handler(request)
    response.headers["X-Main"] = "MainServer(middlewares=...)"
    return response


if __name__ == "__main__":
    MainServer("server.yml", os.path.dirname(os.path.abspath(__file__)), middlewares=[stamp]).run()
"""

#: runner -> (command after the interpreter, which ports answer: "http", "ws")
RUNNERS = {
    "tranzit run": (["-m", "tranzit", "run"], ("http", "ws")),
    "python main.py": (["main.py"], ("http", "ws")),
    "tranzit serve ws": (["-m", "tranzit", "serve", "ws"], ("ws",)),
    "tranzit serve http (gunicorn)": (["-m", "tranzit", "serve", "http"], ("http",)),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hooks")
    (root / "server.yml").write_text("apps: [site]\n")
    (root / "main.py").write_text(textwrap.dedent(MAIN))
    (root / "apps" / "site").mkdir(parents=True)
    (root / "apps" / "__init__.py").write_text("")
    (root / "apps" / "site" / "__init__.py").write_text("")
    (root / "apps" / "site" / "routes.py").write_text(textwrap.dedent(ROUTES))
    return root


@pytest.fixture(params=sorted(RUNNERS))
def served(request: pytest.FixtureRequest, project: Path) -> Iterator[tuple[str, dict[str, int]]]:
    argv, answering = RUNNERS[request.param]
    ports = {"http": free_port(), "ws": free_port()}
    env = clean_env(
        TRANZIT_HTTP_PORT=str(ports["http"]),
        TRANZIT_WS_PORT=str(ports["ws"]),
        WEB_CONCURRENCY="1",
    )
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for port in (ports[name] for name in answering):
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
        yield request.param, {name: ports[name] for name in answering}
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_every_runner_honours_setup_and_ws_connect(served: tuple[str, dict[str, int]]) -> None:
    runner, ports = served
    for role, port in ports.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/probe", timeout=5) as response:
            assert response.read().decode() == f"setup ran for the {role} app", runner
            if runner == "python main.py" and role == "http":
                assert response.headers["X-Main"] == "MainServer(middlewares=...)"
        url = f"ws://127.0.0.1:{port}{'/ws' if role == 'http' else '/'}"
        with pytest.raises(InvalidStatus) as refused:
            websockets.sync.client.connect(url, open_timeout=5)
        assert refused.value.response.status_code == 401, runner
        with websockets.sync.client.connect(url + "?token=let-me-in", open_timeout=5) as ws:
            ws.send("whoami|")
            assert ws.recv(timeout=5) == "whoami|tok", runner
