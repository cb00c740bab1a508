"""The development server as a user runs it: ``tranzit run`` and the old ``python main.py``."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import OLD_PROJECT, clean_env, free_port, running, wait_http
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

Server = tuple[subprocess.Popen[str], int, int]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: str = resp.read().decode()
        return body


async def test_old_project_page_and_endless_rule_on_both_endpoints(
    old_project_server: Server,
) -> None:
    _, http, ws = old_project_server
    assert "Hello from tranzit!" in get(f"http://127.0.0.1:{http}/")
    assert "<h1>Camel</h1>" in get(f"http://127.0.0.1:{http}/camel")
    for url in (f"ws://127.0.0.1:{ws}", f"ws://127.0.0.1:{http}/ws"):
        async with connect(url, open_timeout=5) as client:
            await client.send("get_hello|")
            for _ in range(2):  # it keeps pushing
                assert await asyncio.wait_for(client.recv(), timeout=3) == "HELLO!"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_websockets_with_1001_and_exits_0_fast(
    old_project_server: Server, sig: signal.Signals
) -> None:
    proc, _, ws = old_project_server
    async with connect(f"ws://127.0.0.1:{ws}", open_timeout=5) as client:
        await client.send("get_hello|")
        assert await asyncio.wait_for(client.recv(), timeout=3) == "HELLO!"
        started = time.monotonic()
        proc.send_signal(sig)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(client.recv(), timeout=3)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    code = await asyncio.to_thread(proc.wait, 5)
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 2.0, f"shutdown took {elapsed:.2f} s"


def test_old_main_py_runs_unchanged() -> None:
    with running([sys.executable, "main.py"], ready_path="/camel", cwd=OLD_PROJECT) as server:
        proc = server[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


def test_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for argv in (
            [sys.executable, "-m", "tranzit", "run", "--project", str(OLD_PROJECT)],
            [sys.executable, "main.py"],
        ):
            result = subprocess.run(
                argv,
                cwd=OLD_PROJECT,
                env=clean_env(TRANZIT_HTTP_PORT=str(port), TRANZIT_WS_PORT=str(free_port())),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 1, result.stderr
            errors = [line for line in result.stderr.splitlines() if line.startswith("tranzit:")]
            assert errors == [f"tranzit: cannot listen on 127.0.0.1:{port}: address already in use"]
            assert "Traceback" not in result.stderr


def test_app_import_error_is_reported_by_the_cli(tmp_path: Path) -> None:
    project = tmp_path
    (project / "apps" / "blog").mkdir(parents=True)
    (project / "apps" / "blog" / "routes.py").write_text("1/0\n")
    (project / "server.yml").write_text("apps: [blog]\n")
    result = subprocess.run(
        [sys.executable, "-m", "tranzit", "check", "--project", str(project)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "app 'blog'" in result.stderr and "ZeroDivisionError" in result.stderr
    assert "Traceback" not in result.stderr


# -- address options -----------------------------------------------------------


def start(argv: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tranzit", *argv],
        env=clean_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=15)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def test_run_options_override_the_config_and_environment() -> None:
    http, ws = free_port(), free_port()
    options = ["--host", "127.0.0.1", "--port", str(http), "--ws-port", str(ws)]
    # Ports 1 and 2 could not be bound: the options win over the environment.
    proc = start(
        ["run", "-p", str(OLD_PROJECT), *options], TRANZIT_HTTP_PORT="1", TRANZIT_WS_PORT="2"
    )
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", proc=proc)
        async with connect(f"ws://127.0.0.1:{ws}", open_timeout=5) as client:
            await client.send("get_hello|")
            assert await asyncio.wait_for(client.recv(), timeout=3) == "HELLO!"
    finally:
        stop(proc)


async def test_serve_ws_options_are_the_websocket_servers_address() -> None:
    ws = free_port()
    proc = start(["serve", "ws", "-p", str(OLD_PROJECT), "--host", "127.0.0.1", "--port", str(ws)])
    try:
        wait_http(f"http://127.0.0.1:{ws}/healthz", proc=proc)
        async with connect(f"ws://127.0.0.1:{ws}/", open_timeout=5) as client:
            await client.send("get_hello|")
            assert await asyncio.wait_for(client.recv(), timeout=3) == "HELLO!"
    finally:
        stop(proc)


def test_serve_http_port_option_reaches_gunicorn(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    port = free_port()
    proc = start(["serve", "http", "-p", str(tmp_path), "--port", str(port)], WEB_CONCURRENCY="1")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
    finally:
        stop(proc)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["run", "--port", "70000"], "--port: http_port: expected a port number from 1 to 65535"),
        (["run", "--ws-port", "x"], "--ws-port: ws_port: expected a port number from 1 to 65535"),
        (["run", "--host", ""], "--host: http_host: expected a non-empty string"),
        (["serve", "ws", "--port", "0"], "--port: ws_port: expected a port number"),
        (["serve", "http", "--port", "-1"], "--port: http_port: expected a port number"),
    ],
)
def test_bad_option_is_one_config_line_and_exit_2(argv: list[str], error: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tranzit", *argv, "-p", str(OLD_PROJECT)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tranzit: {error}"), result.stderr
