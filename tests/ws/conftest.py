"""Fixtures for the websocket tests: the ``wsproject`` fixture served for real.

Every server listens on 127.0.0.1 on an ephemeral port, in this test's event
loop, and is shut down (runner cleanup) when the test ends.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import free_port

import tranzit
from tranzit.app import create_ws_app
from tranzit.testing import project_app
from tranzit.ws.connection import Connection, ConnectionRegistry
from tranzit.ws.hub import HUB

WSPROJECT = Path(__file__).resolve().parent.parent / "fixtures" / "wsproject"

#: Where each kind of endpoint is reached: the HTTP app's ``ws_path``, or any
#: path of the standalone websocket app (the ``ws_port`` of old projects).
ENDPOINT_PATHS = {"http": "/ws", "standalone": "/any/path?x=1"}


@dataclass
class Served:
    """One running server of the ``wsproject`` fixture."""

    server: TestServer
    app: web.Application
    path: str

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    @property
    def origin(self) -> str:
        """The ``Origin`` a page served by this server would send."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def registry(self) -> ConnectionRegistry:
        """The open connections (``.task_count()``: their running handler tasks)."""
        return registry_of(self.app)

    def connections(self) -> list[Connection]:
        return list(self.registry)

    async def close(self) -> None:
        await self.server.close()


def registry_of(app: web.Application) -> ConnectionRegistry:
    """The app's open connections."""
    return app[HUB].connections


def build_app(kind: str, **overrides: Any) -> web.Application:
    if kind == "http":
        return project_app(WSPROJECT, **overrides)
    config, project = tranzit.load(WSPROJECT, environ={}, required=False, **overrides)
    return create_ws_app(config, project)


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(kind="http"|"standalone", **config_overrides)`` starts a server."""
    started: list[Served] = []

    async def start(kind: str = "http", **overrides: Any) -> Served:
        app = build_app(kind, **overrides)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        served = Served(server, app, ENDPOINT_PATHS[kind])
        started.append(served)
        return served

    yield start
    for served in reversed(started):
        await served.close()


@pytest.fixture(params=sorted(ENDPOINT_PATHS))
async def served(request: pytest.FixtureRequest, serve: Serve) -> Served:
    """The fixture project on both endpoints: ``/ws`` of the HTTP app and the ws port."""
    return await serve(request.param)


WaitUntil = Callable[..., Awaitable[None]]


async def _wait_until(
    predicate: Callable[[], bool], timeout: float = 3.0, message: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(0.01)


@pytest.fixture
def wait_until() -> WaitUntil:
    """``await wait_until(predicate, timeout=3.0, message=...)``: bounded polling."""
    return _wait_until


class RedisServer:
    """A redis-server on a loopback port: kill it, pause it, start it again on that port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if probe.stdout.strip() == "PONG":
                return
            time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()  # SIGKILL ends a stopped process too


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The broadcast_url of each backend; a test taking it runs on both."""
    if request.param == "local":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url
