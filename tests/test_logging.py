"""Log lines as an operator reads them: the access log at ``log_level: debug`` and
``log_format: json`` on every runner (dev server, ``serve ws``, gunicorn)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import clean_env, free_port, wait_http
from websockets.asyncio.client import connect

from tranzit.logs import JsonFormatter

KEYS = {"time", "level", "logger", "message", "pid"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A page and a view with a bug."""
    root = tmp_path_factory.mktemp("logs")
    app = root / "apps" / "site"
    app.mkdir(parents=True)
    (root / "apps" / "__init__.py").write_text("")
    (app / "__init__.py").write_text("")
    (app / "views.py").write_text(
        textwrap.dedent(
            """
            from tranzit import web

            class Page(web.TZView):
                async def get(self, request):
                    return web.Response(text="page")

            class Boom(web.TZView):
                async def get(self, request):
                    raise RuntimeError("a bug in the view")
            """
        )
    )
    (app / "routes.py").write_text(
        "from .views import Page, Boom\n\n"
        "PATH_PREFIX = ''\nAPP_STATIC_DIR = None\n"
        "routes = {'/page': Page, '/boom': Boom}\nws_rules = {}\n"
    )
    (root / "server.yml").write_text("apps: [site]\n")
    return root


class Output:
    def __init__(self, out: Path, err: Path) -> None:
        self.out_path, self.err_path = out, err

    @property
    def stdout(self) -> list[str]:
        return self.out_path.read_text().splitlines()

    @property
    def stderr(self) -> list[str]:
        return self.err_path.read_text().splitlines()


@contextmanager
def started(argv: list[str], tmp_path: Path, port: int, **env: str) -> Iterator[Output]:
    """A server process until its ``port`` answers ``/healthz``; then SIGTERM."""
    output = Output(tmp_path / f"out-{port}.log", tmp_path / f"err-{port}.log")
    with output.out_path.open("wb") as out, output.err_path.open("wb") as err:
        proc = subprocess.Popen(argv, env=clean_env(**env), stdout=out, stderr=err, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
        yield output
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def dev_server(
    project: Path, tmp_path: Path, *, role: str = "run", **settings: str
) -> Iterator[tuple[Output, int, int]]:
    """``tranzit run`` (or ``tranzit serve ws``) with ``settings`` as ``TRANZIT_*``."""
    http, ws = free_port(), free_port()
    command = ["run"] if role == "run" else ["serve", role]
    argv = [sys.executable, "-m", "tranzit", *command, "--project", str(project)]
    env = {f"TRANZIT_{k.upper()}": v for k, v in settings.items()}
    env.update(TRANZIT_HTTP_PORT=str(http), TRANZIT_WS_PORT=str(ws))
    with started(argv, tmp_path, http if role == "run" else ws, **env) as output:
        yield output, http, ws


def fetch(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def access_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "aiohttp.access" in line or "gunicorn.access" in line]


def records(lines: list[str]) -> list[dict[str, Any]]:
    """Every line parsed as one JSON object with the documented keys."""
    parsed = []
    for line in lines:
        record = json.loads(line)  # fails the test on a line that is not JSON
        assert isinstance(record, dict) and set(record) >= KEYS, line
        when = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        assert when.utcoffset() == timedelta(0) and record["time"].endswith("Z")
        parsed.append(record)
    return parsed


# -- the formatter -------------------------------------------------------------


def test_json_formatter_one_line_per_record_with_the_traceback_as_a_field() -> None:
    try:
        raise KeyError("db")
    except KeyError:
        record = logging.LogRecord(
            "tranzit.x", logging.ERROR, __file__, 1, "two\nlines: %s", ("é",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["logger"] == "tranzit.x" and entry["level"] == "ERROR"
    assert entry["message"] == "two\nlines: é"
    assert entry["exc_info"].startswith("Traceback") and "KeyError: 'db'" in entry["exc_info"]
    when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert abs(when - datetime.now(timezone.utc)) < timedelta(seconds=60)


# -- the access log --------------------------------------------------------------


async def test_debug_logs_each_request_on_both_endpoints(project: Path, tmp_path: Path) -> None:
    with dev_server(project, tmp_path, log_level="debug") as (output, http, ws):
        assert fetch(f"http://127.0.0.1:{http}/page") == 200
        async with connect(f"ws://127.0.0.1:{ws}/", open_timeout=5):
            pass
        await asyncio.sleep(0.5)  # aiohttp logs a websocket's request once it closed
        lines = access_lines(output.stderr)
    assert any('"GET /page HTTP/1.1" 200' in line for line in lines), lines
    assert any('"GET / HTTP/1.1" 101' in line for line in lines), lines


def test_info_logs_no_request(project: Path, tmp_path: Path) -> None:
    with dev_server(project, tmp_path) as (output, http, _):
        assert fetch(f"http://127.0.0.1:{http}/page") == 200
        time.sleep(0.3)
    assert access_lines(output.stderr) == []
    assert any("http://127.0.0.1" in line for line in output.stderr)  # it does log


async def test_serve_ws_at_debug_logs_each_connection(project: Path, tmp_path: Path) -> None:
    with dev_server(project, tmp_path, role="ws", log_level="debug") as (output, _, ws):
        async with connect(f"ws://127.0.0.1:{ws}/chat", open_timeout=5):
            pass
        await asyncio.sleep(0.5)  # aiohttp logs a websocket's request once it closed
        lines = access_lines(output.stderr)
    assert any('"GET /chat HTTP/1.1" 101' in line for line in lines), lines


# -- JSON lines ----------------------------------------------------------------------


def test_dev_server_json_lines(project: Path, tmp_path: Path) -> None:
    with dev_server(project, tmp_path, log_level="debug", log_format="json") as (output, http, _):
        assert fetch(f"http://127.0.0.1:{http}/page") == 200
        assert fetch(f"http://127.0.0.1:{http}/boom") == 500
        time.sleep(0.5)
    logged = records(output.stderr)
    loggers = {r["logger"] for r in logged}
    assert {"tranzit", "aiohttp.access"} <= loggers, loggers
    assert any(r["message"].startswith("http://127.0.0.1") for r in logged)
    failures = [r for r in logged if "exc_info" in r]
    assert failures and "RuntimeError: a bug in the view" in failures[0]["exc_info"]


def test_gunicorn_json_lines(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:tranzit.gunicorn_conf"]
    with started(
        [*argv, "tranzit.app:gunicorn_app"],
        tmp_path,
        port,
        TRANZIT_PROJECT_DIR=str(project),
        TRANZIT_HTTP_PORT=str(port),
        TRANZIT_LOG_LEVEL="debug",
        TRANZIT_LOG_FORMAT="json",
        WEB_CONCURRENCY="1",
    ) as output:
        assert fetch(f"http://127.0.0.1:{port}/page") == 200
        assert fetch(f"http://127.0.0.1:{port}/boom") == 500
        time.sleep(0.5)
    errors, access = records(output.stderr), records(output.stdout)
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in errors)
    assert [r for r in access if '"GET /page HTTP/1.1" 200' in r["message"]], access
    assert {r["logger"] for r in access} == {"gunicorn.access"}
    failures = [r for r in errors if "exc_info" in r]
    assert failures and "RuntimeError: a bug in the view" in failures[0]["exc_info"]


def test_gunicorn_at_info_logs_no_request(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:tranzit.gunicorn_conf"]
    with started(
        [*argv, "tranzit.app:gunicorn_app"],
        tmp_path,
        port,
        TRANZIT_PROJECT_DIR=str(project),
        TRANZIT_HTTP_PORT=str(port),
        WEB_CONCURRENCY="1",
    ) as output:
        assert fetch(f"http://127.0.0.1:{port}/page") == 200
        time.sleep(0.3)
    assert output.stdout == [] and access_lines(output.stderr) == []
    assert any("gunicorn.error: Booting worker" in line for line in output.stderr)
