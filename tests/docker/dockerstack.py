"""Helpers and session fixtures of the Docker stack tests (re-exported by conftest.py).

The Docker stack, for real: an engine, tranzit's images, a generated project.

Everything here is session- or module-scoped so the images are built once.
Without an engine (and no way to start one) the tests are skipped with the
reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "cookiecutter-tranzit"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

# Measurements printed at the end of the session (and in the closing note of issue 5).
METRICS: dict[str, str] = {}


def record(name: str, value: float | str, unit: str = "s") -> None:
    METRICS[name] = f"{value:.2f} {unit}" if isinstance(value, float) else f"{value}"


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output, which says why."""
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


@dataclass
class DockerEnv:
    compose: list[str]
    env: dict[str, str]  # engine_env()'s + the image tags below
    runtime_image: str
    nginx_image: str


class NoEngine(Exception):
    """scripts/docker-env.sh could not provide an engine; the message says why."""


def engine_env(timeout: float = 900) -> tuple[list[str], dict[str, str]]:
    """The compose command and the build environment of scripts/docker-env.sh --env.

    The environment is os.environ plus what the script exports: the base images
    (PYTHON_IMAGE, BUILD_IMAGE, NGINX_IMAGE, REDIS_IMAGE; local stand-ins offline)
    and PIP_OFFLINE.
    """
    script = REPO / "scripts" / "docker-env.sh"
    proc = subprocess.run(
        ["bash", str(script), "--env"], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise NoEngine(f"no Docker engine: {proc.stderr.strip().splitlines()[-3:]}")
    values: dict[str, str] = {}
    for word in shlex.split(proc.stdout.strip().removeprefix("export ")):
        key, _, value = word.partition("=")
        values[key] = value
    compose = shlex.split(values.pop("COMPOSE"))
    return compose, {**os.environ, **values}


@pytest.fixture(scope="session")
def docker_env() -> DockerEnv:
    """An engine and compose (scripts/docker-env.sh starts/installs them when it can)."""
    try:
        compose, env = engine_env(timeout=600)
    except NoEngine as exc:
        if IN_CI:
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))
    tag = uuid.uuid4().hex[:8]
    runtime_image = f"tranzit-test/runtime:{tag}"
    nginx_image = f"tranzit-test/nginx:{tag}"
    build_env = {
        **env,
        "TRANZIT_RUNTIME_IMAGE": runtime_image,
        "TRANZIT_NGINX_IMAGE": nginx_image,
        # Plain HTTP unless a test asks for HTTPS (tests/docker/test_tls.py does).
        "TRANZIT_TLS": "off",
    }
    return DockerEnv(compose, build_env, runtime_image, nginx_image)


def image_bytes(image: str) -> int:
    """``docker image inspect``'s size: uncompressed, what the image adds to the engine's disk."""
    out = run(["docker", "image", "inspect", "-f", "{{.Size}}", image], timeout=30).stdout
    return int(out.strip())


def image_size(image: str) -> str:
    return f"{image_bytes(image) / 1e6:.0f} MB"


@pytest.fixture(scope="session")
def tranzit_images(docker_env: DockerEnv) -> Iterator[DockerEnv]:
    """tranzit's runtime and nginx images, built once per session from docker/."""
    started = time.monotonic()
    run(
        [
            *docker_env.compose,
            "-f",
            str(REPO / "docker" / "compose.images.yaml"),
            "--profile",
            "images",
            "build",
        ],
        env=docker_env.env,
        timeout=900,
    )
    record("build runtime + nginx images (layer cache may apply)", time.monotonic() - started)
    record("size runtime image", image_size(docker_env.runtime_image))
    record("size nginx image", image_size(docker_env.nginx_image))
    try:
        yield docker_env
    finally:
        subprocess.run(
            ["docker", "image", "rm", docker_env.runtime_image, docker_env.nginx_image],
            capture_output=True,
            timeout=120,
        )


@dataclass
class Stack:
    """A generated project, built and running under a unique compose project name."""

    root: Path
    name: str
    compose_cmd: list[str]
    env: dict[str, str]
    port: int
    images: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(
            [*self.compose_cmd, "-p", self.name, *args],
            env=self.env,
            cwd=self.root,
            timeout=timeout,
        )

    def logs(self) -> str:
        proc = subprocess.run(
            [*self.compose_cmd, "-p", self.name, "logs", "--no-color", "--tail", "200"],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.stdout + proc.stderr

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout
        return [line for line in out.split() if line]


CURRENT_STACK: list[Stack] = []


def health(container: str) -> str:
    """The container's health status ("starting", "healthy", …; "" when it is not running)."""
    fmt = "{{if .State.Running}}{{.State.Health.Status}}{{end}}"
    return run(["docker", "inspect", "-f", fmt, container], timeout=30).stdout.strip()


def wait_healthy(containers: list[str], timeout: float) -> float:
    """Wait until every container is running and healthy; how long that took."""
    started = time.monotonic()
    while True:
        sick = {c[:12]: status for c in containers if (status := health(c)) != "healthy"}
        if not sick:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not healthy after {timeout:.0f} s: {sick}")
        time.sleep(0.5)


@dataclass
class BuiltProject:
    """A project generated from the template and built (app + nginx images)."""

    root: Path
    name: str
    env: dict[str, str]  # the build environment + IMAGE_NAME/IMAGE_TAG of its images
    compose_cmd: list[str]

    @property
    def images(self) -> list[str]:
        image = self.env["IMAGE_NAME"]
        return [f"{image}:t", f"{image}-nginx:t"]


@pytest.fixture(scope="session")
def built_project(
    tranzit_images: DockerEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltProject]:
    """One generated project with the chat example, built once for the scale and Swarm tests."""
    from cookiecutter.main import cookiecutter

    out = tmp_path_factory.mktemp("scaled")
    root = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(out)))
    name = f"tzscale{uuid.uuid4().hex[:8]}"
    env = {
        **tranzit_images.env,
        "IMAGE_NAME": f"tranzit-test/{name}",
        "IMAGE_TAG": "t",
        "TRANZIT_SECRET_KEY": secrets.token_urlsafe(32),
    }
    project = BuiltProject(root, name, env, tranzit_images.compose)
    try:
        started = time.monotonic()
        run([*project.compose_cmd, "-p", name, "build"], env=env, cwd=root, timeout=900)
        record("build generated project for scale/swarm", time.monotonic() - started)
        yield project
    finally:
        subprocess.run(
            ["docker", "image", "rm", "-f", *project.images], capture_output=True, timeout=120
        )


def docker_gateway() -> str:
    """The host's address on the engine's default bridge: what ``host-gateway`` maps to,
    where a server the test runs on the host is reachable from containers."""
    out = run(["docker", "network", "inspect", "bridge", "-f", "{{json .IPAM.Config}}"], timeout=30)
    (config,) = json.loads(out.stdout)
    # The default bridge often states no Gateway: it is then the subnet's first address.
    return str(config.get("Gateway") or next(ipaddress.ip_network(config["Subnet"]).hosts()))


def remove_compose_project(stack: Stack, *, images: bool = False) -> None:
    """`down` with volumes and orphans; with ``images``, the images the stack built too
    (without, they stay: they belong to a BuiltProject)."""
    rmi = ["--rmi", "all"] if images else []
    subprocess.run(
        [*stack.compose_cmd, "-p", stack.name, "down", "-v", *rmi, "--remove-orphans", "-t", "5"],
        env=stack.env,
        cwd=stack.root,
        capture_output=True,
        timeout=180,
    )


@contextlib.contextmanager
def tracked(stack: Stack, *, images: bool = False) -> Iterator[Stack]:
    """``stack`` as the one whose logs a failing test shows (CURRENT_STACK), taken down
    afterwards (remove_compose_project), however the block ends."""
    CURRENT_STACK.append(stack)
    try:
        yield stack
    finally:
        try:
            remove_compose_project(stack, images=images)
        finally:
            CURRENT_STACK.remove(stack)


class ChatClient:
    """A websocket client of the template's chat, reading everything it is sent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.ws = ws
        self.name = name
        self.host = ""  # the ws replica's host name, from the join reply
        self.texts: list[str] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._new = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.texts.append(message.data)
                    self._new.set()
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self._new.set()

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while True:
            for text in self.texts[seen:]:
                if predicate(text):
                    return text
            seen = len(self.texts)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or self.closed.is_set():
                raise AssertionError(f"{self.name}: nothing matched; got {self.texts[-5:]}")
            self._new.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def join(self, room: str) -> None:
        await self.ws.send_str(f"join|{room}")  # the name is the session's (login)
        reply = await self.wait_for(lambda t: t.startswith(f"join|{room},"), 15)
        self.host = reply.split(",")[2]

    def said(self, by: str, prefix: str) -> list[str]:
        """The texts ``by`` said (``chat|<room>,<by>,<text>``) that start with ``prefix``."""
        out = []
        for text in self.texts:
            parts = text.split(",", 2)
            if (
                len(parts) == 3
                and parts[0].startswith("chat|")
                and parts[1] == by
                and parts[2].startswith(prefix)
            ):
                out.append(parts[2])
        return out

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


SESSION_COOKIE = "AIOHTTP_SESSION"


async def login(session: aiohttp.ClientSession, base: str, name: str) -> dict[str, str]:
    """Log ``name`` in to the template's example (``POST /login``); the headers that carry
    its session cookie to a websocket (the example's ``/ws`` refuses anyone else)."""
    async with session.post(f"{base}/login", data={"name": name}, allow_redirects=False) as r:
        assert r.status == 303, (r.status, await r.text())
        cookie = r.cookies[SESSION_COOKIE].value
    return {"Cookie": f"{SESSION_COOKIE}={cookie}"}


async def connect_chat(
    session: aiohttp.ClientSession, url: str, count: int, room: str
) -> list[ChatClient]:
    """``count`` clients of ``url`` (…/ws), each logged in as c0, c1, … and joined to ``room``."""
    base = url.rsplit("/", 1)[0]
    clients: list[ChatClient] = []
    for i in range(count):
        headers = await login(session, base, f"c{i}")
        ws = await session.ws_connect(
            url, heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=5), headers=headers
        )
        client = ChatClient(ws, f"c{i}")
        clients.append(client)
        await client.join(room)
    return clients


async def until_everyone_hears(
    speaker: ChatClient, listeners: list[ChatClient], room: str, timeout: float
) -> None:
    """Warm-up: ``speaker`` says numbered pings until each listener has heard one.

    A ws replica subscribes to Redis in the background (with backoff while Redis
    starts), so a healthy container may not hear other replicas for a moment.
    """
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        await speaker.ws.send_str(f"say|{room},warm-up {n}")
        n += 1
        await asyncio.sleep(0.3)
        deaf = [c.name for c in listeners if not c.said(speaker.name, "warm-up ")]
        if not deaf:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s these clients heard nothing: {deaf}")


def misheard(clients: list[ChatClient], by: str, prefix: str, count: int) -> dict[str, list[str]]:
    """Clients that did not hear ``prefix`` 0…count-1 from ``by`` exactly once, in order."""
    expected = [f"{prefix}{n}" for n in range(count)]
    heard = {c.name: c.said(by, prefix) for c in clients}
    return {name: got for name, got in heard.items() if got != expected}


async def settle(
    clients: list[ChatClient], by: str, prefix: str, count: int, timeout: float
) -> None:
    """Wait until every client holds ``count`` texts of ``by`` starting with ``prefix``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(c.said(by, prefix)) >= count for c in clients):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # time for a duplicate to show up
