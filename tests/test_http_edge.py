"""The HTTP edge under faults and hostile clients: timeouts, descriptors, bad requests,
body limit, dot-files, readiness. Real servers on 127.0.0.1, raw sockets as clients."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import clean_env, free_port, wait_http
from websockets.asyncio.client import connect

from tranzit import httpserver
from tranzit.testing import project_client

HEADERS = b"Host: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a view that reads its body, one that fails, and dot-files."""
    root = tmp_path_factory.mktemp("edge")
    app = root / "apps" / "edge"
    (app / "static" / ".git").mkdir(parents=True)
    (root / "apps" / "__init__.py").write_text("")
    (app / "__init__.py").write_text("")
    (app / "static" / "page.txt").write_text("page")
    (app / "static" / ".env").write_text("SECRET=1")
    (app / "static" / ".git" / "config").write_text("[core]")
    (root / "common" / "static" / ".hidden").mkdir(parents=True)
    (root / "common" / "static" / ".hidden" / "x.txt").write_text("x")
    (root / "common" / "static" / "site.css").write_text("body {}")
    (app / "views.py").write_text(
        textwrap.dedent(
            """
            from tranzit import web

            class Upload(web.TZView):
                async def post(self, request):
                    return web.Response(text=str(len(await request.read())))

            class Boom(web.TZView):
                async def get(self, request):
                    raise RuntimeError("a bug in the view")

            async def echo(text, **kwargs):
                await kwargs["send_func"](kwargs["writer"], "echo|" + text)
            """
        )
    )
    (app / "routes.py").write_text(
        textwrap.dedent(
            """
            import os
            from .views import Upload, Boom, echo

            PATH_PREFIX = ""
            APP_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
            routes = {"/upload": Upload, "/boom": Boom}
            ws_rules = {"echo": echo}
            """
        )
    )
    (root / "server.yml").write_text("apps: [edge]\n")
    return root


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], http: int, ws: int, log: Path) -> None:
        self.proc, self.http, self.ws, self.log_path = proc, http, ws, log

    @property
    def log(self) -> str:
        return self.log_path.read_text()


#: ``tranzit run`` on the default asyncio loop instead of uvloop.
ASYNCIO_RUN = (
    "import asyncio, sys, tranzit; from tranzit.serve import serve, setup_logging;"
    "c, p = tranzit.load(sys.argv[1], required=False); setup_logging(c.log_level);"
    "asyncio.run(serve(c, p))"
)


@contextlib.contextmanager
def server(
    project: Path, tmp_path: Path, *, loop: str = "uvloop", nofile: int = 0, **settings: str
) -> Iterator[Server]:
    """The dev server as a subprocess; its log goes to a file (a full pipe would stall it)."""
    http, ws = free_port(), free_port()
    env = clean_env(TRANZIT_HTTP_PORT=str(http), TRANZIT_WS_PORT=str(ws))
    env.update({f"TRANZIT_{k.upper()}": v for k, v in settings.items()})
    argv = [sys.executable, "-m", "tranzit", "run", "--project", str(project)]
    if loop == "asyncio":
        argv = [sys.executable, "-c", ASYNCIO_RUN, str(project)]
    if nofile:
        argv = ["prlimit", f"--nofile={nofile}:{nofile}", *argv]
    log = tmp_path / f"server-{http}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", proc=None)
        yield Server(proc, http, ws, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def open_socket(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        sock.sendall(data)
    return sock


def seconds_until_closed(sock: socket.socket, limit: float = 6.0) -> float:
    """Reads (and drops) whatever arrives until the server closes; the time it took."""
    started = time.monotonic()
    sock.settimeout(limit)
    with sock:
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            return float("inf")
        except ConnectionResetError:
            pass
    return time.monotonic() - started


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length (status line and body)."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def exchange(port: int, data: bytes) -> bytes:
    """One request on a new connection: its response."""
    with open_socket(port, data) as sock:
        return read_response(sock)


# -- timeouts --------------------------------------------------------------


def test_silent_and_half_sent_requests_are_closed_after_header_timeout(
    project: Path, tmp_path: Path
) -> None:
    with server(project, tmp_path, header_timeout="1", keepalive_timeout="30") as srv:
        clients = {
            "silent (http port)": open_socket(srv.http),
            "silent (ws port)": open_socket(srv.ws),
            "half the headers": open_socket(srv.http, b"GET /upload HTTP/1.1\r\n" + HEADERS),
        }
        # Trickling header bytes does not buy time: the timeout runs from the first byte.
        trickle = open_socket(srv.http, b"GET / HTTP/1.1\r\n")
        for _ in range(4):
            time.sleep(0.3)
            with contextlib.suppress(OSError):
                trickle.sendall(b"X-A: b\r\n")
        clients["trickled headers"] = trickle
        for name, sock in clients.items():
            assert seconds_until_closed(sock) < 3, f"{name}: still open"


def test_a_later_keepalive_request_has_the_header_timeout_too(
    project: Path, tmp_path: Path
) -> None:
    with server(project, tmp_path, header_timeout="1", keepalive_timeout="30") as srv:
        sock = open_socket(srv.http, b"GET /static/edge/page.txt HTTP/1.1\r\n" + HEADERS + b"\r\n")
        assert read_response(sock).endswith(b"page")
        time.sleep(1.5)  # idle between requests: keepalive_timeout (30 s) applies
        sock.sendall(b"GET /static/edge/page.txt HTTP/1.1\r\n" + HEADERS + b"\r\n")
        assert read_response(sock).endswith(b"page")
        sock.sendall(b"GET /static/edge/page.txt HTTP/1.1\r\n")
        assert seconds_until_closed(sock) < 3


def test_idle_keepalive_connection_is_closed_after_keepalive_timeout(
    project: Path, tmp_path: Path
) -> None:
    with server(project, tmp_path, header_timeout="30", keepalive_timeout="1") as srv:
        sock = open_socket(srv.http, b"GET /healthz HTTP/1.1\r\n" + HEADERS + b"\r\n")
        assert b" 200 " in read_response(sock)
        assert 0.5 < seconds_until_closed(sock) < 3


def test_paused_upload_fails_with_408_and_a_debug_line(project: Path, tmp_path: Path) -> None:
    with server(project, tmp_path, body_timeout="1", log_level="debug") as srv:
        head = b"POST /upload HTTP/1.1\r\n" + HEADERS + b"Content-Length: 100\r\n\r\n"
        sock = open_socket(srv.http, head + b"x" * 10)
        started = time.monotonic()
        response = read_response(sock)
        assert response.startswith(b"HTTP/1.1 408 "), response
        assert time.monotonic() - started < 3
        assert seconds_until_closed(sock) < 1
        # A slow but steady upload is fine: the timeout is per pause, not per body.
        with open_socket(srv.http, head) as sock:
            for _ in range(4):
                time.sleep(0.4)
                sock.sendall(b"y" * 25)
            assert read_response(sock).endswith(b"\r\n\r\n100")
        time.sleep(0.3)
    assert "request body paused for over 1 s" in srv.log
    assert "Traceback" not in srv.log and " ERROR " not in srv.log


async def test_websocket_is_not_subject_to_header_or_body_timeouts(
    project: Path, tmp_path: Path
) -> None:
    with server(project, tmp_path, header_timeout="1", body_timeout="1") as srv:
        for url in (f"ws://127.0.0.1:{srv.ws}/", f"ws://127.0.0.1:{srv.http}/ws"):
            async with connect(url, open_timeout=5) as client:
                await asyncio.sleep(2.5)
                await client.send("echo|still here")
                assert await asyncio.wait_for(client.recv(), 3) == "echo|still here"
        # ... while a plain connection beside them is closed.
        assert seconds_until_closed(open_socket(srv.http)) < 3


def test_gunicorn_worker_has_the_timeouts(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    port = free_port()
    env = clean_env(
        TRANZIT_PROJECT_DIR=str(project),
        TRANZIT_HTTP_PORT=str(port),
        TRANZIT_HEADER_TIMEOUT="1",
        TRANZIT_BODY_TIMEOUT="1",
        WEB_CONCURRENCY="1",
    )
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:tranzit.gunicorn_conf"]
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "tranzit.app:gunicorn_app"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert seconds_until_closed(open_socket(port, b"GET / HTTP/1.1\r\n")) < 3
        head = b"POST /upload HTTP/1.1\r\n" + HEADERS + b"Content-Length: 100\r\n\r\n"
        assert exchange(port, head + b"x").startswith(b"HTTP/1.1 408 ")
    finally:
        proc.terminate()
        proc.wait(15)
    assert "Traceback" not in log.read_text()


# -- file descriptors --------------------------------------------------------


def get_status(port: int, timeout: float = 1.0) -> int | None:
    """The status of GET /healthz on a new connection; None when the server does not serve it."""
    try:
        with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout)) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + HEADERS + b"Connection: close\r\n\r\n")
            line = sock.recv(100)
    except OSError:
        return None
    return int(line.split()[1]) if line.startswith(b"HTTP/") else None


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_out_of_descriptors_is_logged_once_and_service_resumes(
    project: Path, tmp_path: Path, loop: str
) -> None:
    with server(project, tmp_path, loop=loop, nofile=64) as srv:
        idle = []
        try:
            for _ in range(80):  # more than the limit leaves
                idle.append(open_socket(srv.http))
            time.sleep(0.5)
            assert get_status(srv.http) is None, "served beyond the descriptor limit"
            time.sleep(1.2)  # asyncio retries the accept every second: more failures
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 10
        while get_status(srv.http) != 200:
            assert time.monotonic() < deadline, "not serving again after descriptors freed"
            time.sleep(0.2)
        warnings = [line for line in srv.log.splitlines() if "out of file descriptors" in line]
        assert len(warnings) == 1, srv.log
        assert "of 64 open" in warnings[0]
        assert "Traceback" not in srv.log


# -- malformed requests and handler errors -----------------------------------


def test_malformed_requests_log_one_debug_line_and_bugs_keep_their_traceback(
    project: Path, tmp_path: Path
) -> None:
    with server(project, tmp_path, log_level="debug") as srv:
        bad = [
            b"GET / HTTP/1.1\r\n" + HEADERS + b"Content-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + HEADERS + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
        ]
        for data in bad:
            assert exchange(srv.http, data).startswith(b"HTTP/1.0 400")
        # An abandoned upload: the client goes away mid-body.
        with open_socket(
            srv.http, b"POST /upload HTTP/1.1\r\n" + HEADERS + b"Content-Length: 99\r\n\r\nab"
        ):
            time.sleep(0.2)
        time.sleep(0.5)
        client_caused = srv.log
        assert "Traceback" not in client_caused and " ERROR " not in client_caused
        assert client_caused.count("DEBUG aiohttp.server: Error handling request") >= 3
        boom = exchange(srv.http, b"GET /boom HTTP/1.1\r\n" + HEADERS + b"\r\n")
        assert boom.startswith(b"HTTP/1.1 500")
        time.sleep(0.3)
    assert "RuntimeError: a bug in the view" in srv.log and "Traceback" in srv.log


# -- body limit, dot-files, readiness ---------------------------------------


async def test_body_limit_is_max_body_size(project: Path) -> None:
    async with project_client(project) as client:  # the default: 10 MiB, like nginx's
        resp = await client.post("/upload", data=io.BytesIO(b"x" * (2 * 1024 * 1024)))
        assert resp.status == 200 and await resp.text() == str(2 * 1024 * 1024)
    async with project_client(project, max_body_size=1000) as client:
        assert await (await client.post("/upload", data=b"x" * 1000)).text() == "1000"
        assert (await client.post("/upload", data=b"x" * 1001)).status == 413


async def test_dot_files_are_not_served(project: Path) -> None:
    async with project_client(project) as client:
        assert (await client.get("/static/edge/page.txt")).status == 200
        assert (await client.get("/static/common/site.css")).status == 200
        for path in (
            "/static/edge/.env",
            "/static/edge/.git/config",
            "/static/common/.hidden/x.txt",
            "/static/edge/%2eenv",
        ):
            resp = await client.get(path)
            assert resp.status == 404, path
            assert "SECRET" not in await resp.text()


def redis_server(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def status_of(url: str) -> tuple[int, str, str | None]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode(), resp.headers.get("Cache-Control")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers.get("Cache-Control")


def test_readyz_follows_the_broadcast_backend_on_both_ports(project: Path, tmp_path: Path) -> None:
    redis_port = free_port()
    redis = redis_server(redis_port)
    try:
        url = f"redis://127.0.0.1:{redis_port}/0"
        with server(project, tmp_path, broadcast_url=url) as srv:
            ports = (srv.http, srv.ws)
            deadline = time.monotonic() + 10
            while any(status_of(f"http://127.0.0.1:{p}/readyz")[0] != 200 for p in ports):
                assert time.monotonic() < deadline, "never ready with Redis up"
                time.sleep(0.2)
            assert status_of(f"http://127.0.0.1:{srv.http}/readyz") == (200, "ready\n", "no-store")
            redis.terminate()
            redis.wait(5)
            deadline = time.monotonic() + 15
            while any(status_of(f"http://127.0.0.1:{p}/readyz")[0] != 503 for p in ports):
                assert time.monotonic() < deadline, "still ready with Redis gone"
                time.sleep(0.2)
            _, text, cache = status_of(f"http://127.0.0.1:{srv.ws}/readyz")
            assert text.count("\n") == 1 and "broadcast" in text and cache == "no-store"
            # Liveness is not readiness: the process still answers.
            assert status_of(f"http://127.0.0.1:{srv.ws}/healthz")[0] == 200
    finally:
        if redis.poll() is None:
            redis.kill()
        redis.wait(5)


def test_private_aiohttp_names_the_timeouts_use_exist() -> None:
    assert httpserver.missing_hooks() == []
    for name in httpserver.PRIVATE_NAMES:
        module, cls, attr = name.rsplit(".", 2)
        owner = getattr(sys.modules.get(module) or __import__(module, fromlist=[cls]), cls)
        slots = {s for klass in owner.__mro__ for s in getattr(klass, "__slots__", ())}
        assert attr in slots or hasattr(owner, attr) or attr in owner.__init__.__code__.co_names, (
            name
        )
