"""The contract's standalone ``WebSocketServer(host, port, api)``, with old handler classes."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support import free_port
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tranzit.compat.wsserver import WebSocketServer as WsWebSocketServer
from tranzit.web import WebSocketServer

TIMEOUT = 3.0


class UpperApi:
    """An old-style handler class, as the contract describes it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.binaries: list[Any] = []
        self.buffered_calls = 0
        self.cancelled = 0

    async def handle_text(self, loop: asyncio.AbstractEventLoop, writer: Any, msg: str) -> None:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        self.texts.append(msg)
        if msg == "raise":
            raise RuntimeError("handle_text failed on purpose")
        if msg.startswith("sleep "):
            await asyncio.sleep(float(msg.split()[1]))
            await WebSocketServer.send_text(writer, "slept")
            return
        if msg == "forever":
            try:
                while True:
                    await WebSocketServer.send_text(writer, "tick")
                    await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        await WebSocketServer.send_text(writer, msg.upper())

    async def handle_binary(self, loop: asyncio.AbstractEventLoop, writer: Any, msg: Any) -> None:
        self.binaries.append(msg)
        await WebSocketServer.send_text(writer, f"binary {type(msg).__name__} {bytes(msg).hex()}")

    async def handle_buffered(
        self, loop: asyncio.AbstractEventLoop, reader: Any, writer: Any, first_msg: Any
    ) -> None:
        self.buffered_calls += 1


class TextOnlyApi:
    async def handle_text(self, loop: asyncio.AbstractEventLoop, writer: Any, msg: str) -> None:
        await WebSocketServer.send_text(writer, "got " + msg)


@asynccontextmanager
async def running(api: Any, **kwargs: Any) -> AsyncIterator[WebSocketServer]:
    server = WebSocketServer("127.0.0.1", 0, api, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def client(
    server: WebSocketServer, path: str = "/", **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    options: dict[str, Any] = {"open_timeout": TIMEOUT, "close_timeout": 2, "proxy": None}
    options.update(kwargs)
    async with connect(f"ws://127.0.0.1:{server.port}{path}", **options) as ws:
        yield ws


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def wait_for(predicate: Any, timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_import_paths_are_the_same_class() -> None:
    assert WebSocketServer is WsWebSocketServer


def test_api_is_required() -> None:
    with pytest.raises(TypeError, match="api"):
        WebSocketServer("127.0.0.1", 0)


async def test_start_on_port_zero_sets_the_port_and_stop_frees_it() -> None:
    server = WebSocketServer(host="127.0.0.1", port=0, api=UpperApi())
    await server.start()
    port = server.port
    try:
        assert port != 0
        async with client(server) as ws:
            await ws.send("hi")
            assert await recv(ws) == "HI"
    finally:
        await server.stop()
    await server.stop()  # a second stop is harmless
    with pytest.raises(OSError):
        async with connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT, proxy=None):
            pass


async def test_handle_text_with_static_send_text_round_trips_unicode() -> None:
    api = UpperApi()
    async with running(api) as server, client(server, "/any/path") as ws:
        for text in ["hello", "привет, мир", "straße", "你好 🎉"]:
            await ws.send(text)
            assert await recv(ws) == text.upper()
        assert api.texts == ["hello", "привет, мир", "straße", "你好 🎉"]


async def test_handle_binary_gets_bytes() -> None:
    api = UpperApi()
    async with running(api) as server, client(server) as ws:
        await ws.send(b"\x00\x01\xfe\xff")
        assert await recv(ws) == "binary bytes 0001feff"
        assert api.binaries == [b"\x00\x01\xfe\xff"]
        assert type(api.binaries[0]) is bytes


async def test_fragments_are_reassembled_and_handle_buffered_is_never_called() -> None:
    api = UpperApi()
    async with running(api) as server, client(server) as ws:
        await ws.send(["frag", "mented ", "текст"])
        assert await recv(ws) == "FRAGMENTED ТЕКСТ"  # noqa: RUF001
        await ws.send([b"\x01", b"\x02\x03"])
        assert await recv(ws) == "binary bytes 010203"
        assert api.texts == ["fragmented текст"]
        assert api.buffered_calls == 0


async def test_raising_handler_is_logged_and_connection_stays_usable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="tranzit")
    async with running(UpperApi()) as server, client(server) as ws:
        await ws.send("raise")
        await ws.send("after")
        assert await recv(ws) == "AFTER"
    records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert len(records) == 1, caplog.text
    assert "handle_text failed on purpose" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text


async def test_api_without_handle_binary_drops_binary_and_stays_usable() -> None:
    async with running(TextOnlyApi()) as server, client(server) as ws:
        await ws.send(b"ignored")
        await ws.send("text")
        assert await recv(ws) == "got text"


async def test_handlers_of_a_closed_connection_are_cancelled() -> None:
    api = UpperApi()
    async with running(api) as server:
        async with client(server) as ws:
            await ws.send("forever")
            assert await recv(ws) == "tick"
            assert server.registry.task_count() == 1
        await wait_for(lambda: server.registry.task_count() == 0, what="cancellation")
        assert api.cancelled == 1
        assert len(server.registry) == 0


async def test_too_many_handlers_closes_with_1013() -> None:
    async with running(UpperApi(), max_tasks=1) as server, client(server) as ws:
        await ws.send("sleep 5")
        await wait_for(lambda: server.registry.task_count() == 1, what="the sleeping handler")
        await ws.send("one more")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1013


async def test_oversize_message_closes_with_1009() -> None:
    async with running(UpperApi(), max_message_size=100) as server:
        async with client(server) as ws:
            await ws.send("x" * 101)
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert ws.close_code == 1009
        async with client(server) as ws:
            await ws.send("still serving")
            assert await recv(ws) == "STILL SERVING"


async def test_foreign_origin_is_refused_and_allowlist_works() -> None:
    async with running(UpperApi(), allowed_origins=("https://ok.example",)) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, origin="https://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        async with client(server, origin="https://ok.example") as ws:
            await ws.send("ok")
            assert await recv(ws) == "OK"


async def test_stop_closes_clients_with_1001_promptly() -> None:
    api = UpperApi()
    server = WebSocketServer("127.0.0.1", 0, api)
    await server.start()
    try:
        async with client(server) as first, client(server) as second:
            for ws in (first, second):
                await ws.send("forever")
                assert await recv(ws) == "tick"
            started = time.monotonic()
            await server.stop()
            assert time.monotonic() - started < 2.0
            for ws in (first, second):
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
                assert ws.close_code == 1001
    finally:
        await server.stop()
    assert api.cancelled == 2
    assert server.registry.task_count() == 0


RUN_FOREVER = textwrap.dedent(
    """
    import asyncio, sys
    from tranzit.web import WebSocketServer

    class Api:
        async def handle_text(self, loop, writer, msg):
            if msg == "forever":
                while True:
                    await WebSocketServer.send_text(writer, "tick")
                    await asyncio.sleep(0.05)
            await WebSocketServer.send_text(writer, msg.upper())

        async def handle_binary(self, loop, writer, msg): ...
        async def handle_buffered(self, loop, reader, writer, first_msg): ...

    server = WebSocketServer(host="127.0.0.1", port=int(sys.argv[1]), api=Api())
    server.run_forever()
    """
)


async def test_run_forever_serves_until_sigterm_and_exits_0() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN_FOREVER,
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ws: ClientConnection | None = None
        deadline = time.monotonic() + 10
        while ws is None:
            try:
                ws = await connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT, proxy=None)
            except OSError:
                if time.monotonic() > deadline or proc.returncode is not None:
                    raise
                await asyncio.sleep(0.05)
        try:
            await ws.send("привет")
            assert await recv(ws) == "ПРИВЕТ"
            await ws.send("forever")
            assert await recv(ws) == "tick"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 1001
        finally:
            await ws.close()
        _, stderr = await asyncio.wait_for(proc.communicate(), 5)
        assert proc.returncode == 0, stderr.decode()
        assert time.monotonic() - started < 2.5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
