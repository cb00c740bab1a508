"""Clients that stop reading: the memory they can pin is bounded, and they are closed promptly.

The stalled client is a socket with a small receive buffer that does the
websocket handshake and then never reads again (framing by the websockets
library's sans-I/O protocol), so the server's writes back up as they would
for a client on a dead mobile link. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from support import FIXTURES, running
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from tranzit.ws import HUB

if TYPE_CHECKING:
    from conftest import Serve, Served, WaitUntil

TIMEOUT = 5.0
MiB = 1024 * 1024
WSPROJECT = FIXTURES / "wsproject"


class StalledClient:
    """Handshakes, sends what it is told, and reads nothing after the 101 (SO_RCVBUF: 4 KiB)."""

    def __init__(
        self, protocol: ClientProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.protocol = protocol
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> StalledClient:
        uri = parse_uri(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (uri.host, uri.port)), TIMEOUT)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        protocol = ClientProtocol(uri)
        protocol.send_request(protocol.connect())
        client = cls(protocol, reader, writer)
        await client._flush()
        while protocol.handshake_exc is None and not protocol.events_received():
            data = await asyncio.wait_for(reader.read(1), TIMEOUT)  # byte by byte: no frame bytes
            protocol.receive_data(data)
            if protocol.state.name == "OPEN":
                break
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        return client

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), TIMEOUT)

    async def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def send_pong(self) -> None:
        self.protocol.send_frame(Frame(Opcode.PONG, b"unsolicited"))
        await self._flush()

    async def read_rest(self, timeout: float = TIMEOUT) -> tuple[int | None, bool]:
        """Read everything the server still sends: (its close code or None, whether it hung up)."""
        deadline = time.monotonic() + timeout
        code: int | None = None
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(
                    self.reader.read(1 << 20), max(0.01, deadline - time.monotonic())
                )
            except (ConnectionError, asyncio.TimeoutError):
                return code, True
            if not data:
                self.protocol.receive_eof()
                return code, True
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    code = int.from_bytes(event.data[:2], "big")
        return code, False

    def close(self) -> None:
        self.writer.transport.abort()


@asynccontextmanager
async def stalled(url: str) -> AsyncIterator[StalledClient]:
    client = await StalledClient.open(url)
    try:
        yield client
    finally:
        client.close()


def echo_frames(count: int, size: int) -> list[str]:
    return [f"echo|{n:04d}" + "x" * (size - 9) for n in range(count)]


def held(served: Served) -> int:
    """Bytes the server holds for its clients: queued frames and sockets' write buffers."""
    total = 0
    for conn in served.connections():
        transport = conn.request.transport
        if transport is not None:
            total += transport.get_write_buffer_size()
        total += sum(len(item[0]) for item in conn.outbound._queue)
    return total


def too_slow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "too slow" in r.getMessage()]


# --- one client: bytes, not frames ---------------------------------------------------


async def test_client_that_stops_reading_is_closed_at_its_byte_limit(
    serve: Serve, wait_until: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    """40 x 1 MiB replies to a client that does not read: closed with 1013 near 4 MiB, once."""
    caplog.set_level(logging.INFO, "tranzit.ws")
    served = await serve("http")
    hub = served.app[HUB]
    async with stalled(served.url) as client:
        await wait_until(lambda: len(served.registry) == 1, message="the client to connect")
        (conn,) = served.connections()
        peak = 0
        for text in echo_frames(40, MiB):
            try:
                await client.send_text(text)
            except (ConnectionError, asyncio.TimeoutError):
                break  # the server hung up on it
            peak = max(peak, held(served))
        await wait_until(
            lambda: len(served.registry) == 0, timeout=2.5, message="the slow client to be closed"
        )
        assert peak <= hub.send_buffer + 2 * MiB, peak
        code, hung_up = await client.read_rest()
        assert hung_up and code in (1013, None), code  # the close frame, if it got through
    lines = too_slow_lines(caplog)
    assert len(lines) == 1, lines
    assert conn.id in lines[0] and "127.0.0.1" in lines[0] and "dropped" in lines[0], lines[0]


async def test_closed_slow_client_frees_what_was_held_for_it_within_two_seconds(
    serve: Serve, wait_until: WaitUntil
) -> None:
    """Its close does not wait behind its full buffer: socket dropped, budget given back."""
    served = await serve("http", ws_send_queue=4)
    hub = served.app[HUB]
    async with stalled(served.url) as client:
        await wait_until(lambda: len(served.registry) == 1, message="the client to connect")
        (conn,) = served.connections()
        transport = conn.request.transport
        assert transport is not None
        for n in range(64):  # 4 MiB of group-like deliveries: over 4 frames, it is too slow
            conn.offer(f"{n}:" + "x" * 65536)
        closed_at = time.monotonic()
        await wait_until(
            lambda: transport.is_closing() and transport.get_write_buffer_size() == 0,
            timeout=2.0,
            message="the slow client's socket buffer to be freed",
        )
        assert hub.send_budget.used == 0
        assert time.monotonic() - closed_at < 2.0
        await wait_until(lambda: len(served.registry) == 0, timeout=2.0, message="it to be gone")
        _, hung_up = await client.read_rest()  # what got through, then the end
        assert hung_up


async def test_total_bound_closes_the_client_whose_frame_went_over(
    serve: Serve, wait_until: WaitUntil
) -> None:
    served = await serve("http")
    hub = served.app[HUB]
    hub.send_budget.limit = 3 * MiB
    async with stalled(served.url), stalled(served.url):
        await wait_until(lambda: len(served.registry) == 2, message="both clients to connect")
        a, b = served.connections()
        chunk = "y" * (256 * 1024)
        for _ in range(64):  # until a holds 2 MiB of the 3: its own 4 MiB bound is not reached
            a.offer(chunk)
            if hub.send_budget.used > 2 * MiB:
                break
        assert not a.closed and 2 * MiB < hub.send_budget.used <= 3 * MiB
        for _ in range(64):
            b.offer(chunk)
            if b.closed:
                break
        await wait_until(lambda: b.closed, timeout=2.0, message="b to be closed")
        assert not a.closed, "the client whose frame went over the total is closed, not another"
        assert hub.send_budget.used <= hub.send_budget.limit


async def test_client_that_only_sends_pongs_is_closed_after_the_send_timeout(
    serve: Serve, wait_until: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    """Unsolicited pongs keep aiohttp's heartbeat happy; the send timeout still closes it."""
    served = await serve("http")
    hub = served.app[HUB]
    hub.send_timeout = 0.5
    hub.send_buffer = 64 * MiB  # only the timeout is in play
    async with stalled(served.url) as client:
        await wait_until(lambda: len(served.registry) == 1, message="the client to connect")
        for _ in range(8):  # more than the sockets' buffers take
            await client.send_text("echo|" + "z" * (MiB - 5))
        started = time.monotonic()
        deadline = started + 4.0
        while len(served.registry) and time.monotonic() < deadline:
            await client.send_pong()
            await asyncio.sleep(0.1)
        assert len(served.registry) == 0, "a client that never reads is held open by its pongs"
        assert time.monotonic() - started < 0.5 + 1.0 + 0.5
    assert any("ws_send_timeout" in line for line in too_slow_lines(caplog))


async def test_slow_group_member_is_warned_about_once(
    serve: Serve, wait_until: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve("http", ws_send_queue=4)
    hub = served.app[HUB]
    async with stalled(served.url):
        await wait_until(lambda: len(served.registry) == 1, message="the client to connect")
        (conn,) = served.connections()
        hub.join(conn, "room")
        for n in range(2000):
            await hub.send_group("room", f"{n}:" + "g" * 4096)
        await wait_until(lambda: len(served.registry) == 0, timeout=2.0, message="it to close")
    lines = too_slow_lines(caplog)
    assert len(lines) == 1, lines[:3]
    assert "dropped" in lines[0] and "frame(s) waited" in lines[0]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
async def test_server_rss_stays_bounded_with_four_clients_that_never_read() -> None:
    """The original finding: 4 x 40 x 1 MiB echoes to non-reading clients took 472 MiB.

    Measured on a real ``tranzit run`` process (its RSS, sampled as the flood
    goes): every byte the server holds counts, not only what tranzit counts.
    """
    argv = [sys.executable, "-m", "tranzit", "run", "--project", str(WSPROJECT)]
    with running(argv) as (proc, http, _ws):
        url = f"ws://127.0.0.1:{http}/ws"
        async with connect(url, max_size=None) as ws:  # warm up: first allocations
            await ws.send("echo|" + "w" * (MiB - 5))
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        baseline = peak = rss(proc.pid)
        clients = [await StalledClient.open(url) for _ in range(4)]
        try:
            texts = echo_frames(40, MiB)
            deadline = time.monotonic() + 20
            for text in texts:
                for client in clients:
                    with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                        await asyncio.wait_for(client.send_text(text), 0.5)
                peak = max(peak, rss(proc.pid))
                if time.monotonic() > deadline:
                    break
            for _ in range(20):
                await asyncio.sleep(0.1)
                peak = max(peak, rss(proc.pid))
        finally:
            for client in clients:
                client.close()
        bound = baseline + 4 * (4 * MiB + 12 * MiB)
        print(f"server RSS: baseline {baseline / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB")
        assert peak < bound, f"peak {peak / MiB:.0f} MiB, baseline {baseline / MiB:.0f} MiB"
