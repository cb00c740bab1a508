"""Drain on stop: a real ``tranzit serve ws`` closes its clients over ``ws_drain_time``.

Each test starts the server as a deploy stops it (SIGTERM) with clients of the
websockets library connected, and records when each one saw its close frame.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support import FIXTURES, clean_env, free_port, wait_http
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tranzit.ws.drain import CLOSE_BOUND

WSPROJECT = FIXTURES / "wsproject"
CLIENTS = 40


@contextmanager
def ws_server(drain_time: float, role: str = "ws") -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``tranzit serve ROLE`` of the wsproject fixture on a free port, until it answers.

    The http role is gunicorn with one worker, its websockets at ``/ws``.
    """
    port, other = free_port(), free_port()
    ports = {"TRANZIT_WS_PORT": port, "TRANZIT_HTTP_PORT": other}
    if role == "http":
        ports = {"TRANZIT_WS_PORT": other, "TRANZIT_HTTP_PORT": port}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tranzit", "serve", role, "--project", str(WSPROJECT)],
        env=clean_env(
            **{name: str(number) for name, number in ports.items()},
            TRANZIT_WS_DRAIN_TIME=str(drain_time),
            WEB_CONCURRENCY="1",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


async def open_clients(port: int, count: int, path: str = "/") -> list[ClientConnection]:
    clients = await asyncio.gather(
        *(connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5) for _ in range(count))
    )
    for client in clients:  # each one answers: the server has registered it
        await client.send("echo|hi")
        assert await asyncio.wait_for(client.recv(), timeout=5) == "echo|hi"
    return list(clients)


async def closed_at(client: ClientConnection) -> tuple[float, int | None, str | None]:
    """When ``client`` got its close frame, with the frame's code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await client.recv()
    when = time.monotonic()
    received = info.value.rcvd
    return when, received and received.code, received and received.reason


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def most_within(times: list[float], span: float) -> int:
    """The most of ``times`` that fall within any ``span`` seconds."""
    times = sorted(times)
    return max(
        sum(1 for later in times[i:] if later - first < span) for i, first in enumerate(times)
    )


async def test_sigterm_closes_clients_with_1001_reconnect_spread_over_the_window() -> None:
    window = 2.0
    with ws_server(window) as (proc, port):
        assert readyz(port) == (200, "ready\n")
        clients = await open_clients(port, CLIENTS)
        waits = [asyncio.create_task(closed_at(client)) for client in clients]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # Readiness fails at once; the port still answers while the clients drain.
        status, text = await asyncio.to_thread(readyz, port)
        assert (status, "draining" in text) == (503, True), text
        # A client arriving during the drain is closed too.
        late = await connect(f"ws://127.0.0.1:{port}/", open_timeout=5)
        late_close = await asyncio.wait_for(closed_at(late), timeout=window + 2)
        closes = await asyncio.wait_for(asyncio.gather(*waits), timeout=window + 2)
        code = await asyncio.to_thread(proc.wait, window + 3)
        exited = time.monotonic() - signalled

    assert {(c, r) for _, c, r in [*closes, late_close]} == {(1001, "reconnect")}
    times = [when for when, _, _ in closes]
    assert max(times) - min(times) >= 1.0, f"closes within {max(times) - min(times):.2f} s"
    assert most_within(times, 0.1) <= CLIENTS // 4
    assert late_close[0] - signalled < window + CLOSE_BOUND
    assert code == 0
    assert exited < window + 3, f"exited {exited:.2f} s after SIGTERM"


async def test_window_0_closes_all_at_once_and_does_not_wait_for_a_silent_client() -> None:
    with ws_server(0) as (proc, port):
        clients = await open_clients(port, CLIENTS)
        # A client that completed its handshake, then never reads nor answers a close.
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        silent.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert silent.recv(1024).startswith(b"HTTP/1.1 101")
        try:
            waits = [asyncio.create_task(closed_at(client)) for client in clients]
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            closes = await asyncio.wait_for(asyncio.gather(*waits), timeout=5)
            code = await asyncio.to_thread(proc.wait, 5)
            exited = time.monotonic() - signalled
        finally:
            silent.close()

    assert {(c, r) for _, c, r in closes} == {(1001, "reconnect")}
    times = [when for when, _, _ in closes]
    assert max(times) - signalled < 0.5, f"last close {max(times) - signalled:.2f} s after"
    assert code == 0
    assert exited < CLOSE_BOUND + 2, f"exited {exited:.2f} s after SIGTERM"


async def test_without_clients_the_stop_does_not_wait_for_the_window() -> None:
    with ws_server(5) as (proc, _):
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 5)
        assert (code, time.monotonic() - signalled < 2) == (0, True)


async def test_gunicorn_worker_drains_its_ws_path_on_sigterm() -> None:
    window = 2.0
    with ws_server(window, role="http") as (proc, port):
        clients = await open_clients(port, CLIENTS // 2, path="/ws")
        waits = [asyncio.create_task(closed_at(client)) for client in clients]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # the arbiter passes it on to its worker
        await asyncio.sleep(0.3)
        status, text = await asyncio.to_thread(readyz, port)
        closes = await asyncio.wait_for(asyncio.gather(*waits), timeout=window + 2)
        code = await asyncio.to_thread(proc.wait, window + 5)

    assert (status, "draining" in text) == (503, True), text
    assert {(c, r) for _, c, r in closes} == {(1001, "reconnect")}
    times = [when for when, _, _ in closes]
    assert max(times) - min(times) >= 1.0, f"closes within {max(times) - min(times):.2f} s"
    assert max(times) - signalled < window + CLOSE_BOUND
    assert code == 0
