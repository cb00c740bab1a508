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
from support import OLD_PROJECT, clean_env, free_port, running
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
