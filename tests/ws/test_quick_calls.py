"""Calls that answer without waiting are never refused, on every supported Python.

Python 3.12+ starts each call's task eagerly; before 3.12 tranzit runs the
first step itself (in the call's task and context). Either way a call only
counts against ``ws_max_tasks`` once it really waits.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp.test_utils import TestServer
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from tranzit.testing import project_app

TIMEOUT = 5.0

VIEWS = """
import asyncio
import contextvars

MARK = contextvars.ContextVar("mark", default="unset")


async def quick(conn, n):
    await conn.send_text("sent|" + n)  # awaits, but does not wait
    return n


async def slow(conn):
    await asyncio.sleep(1)
    return "late"


async def mark(conn, value):
    MARK.set(value)
    await conn.send_text("marked|" + value)


async def peek(conn):
    await conn.send_text("peek|" + MARK.get())


async def keep(conn, value):
    MARK.set(value)
    await asyncio.sleep(0.01)
    return MARK.get()


async def timed(conn):
    try:
        async with asyncio.timeout(0.05):  # entered in the first step
            await asyncio.sleep(5)
    except TimeoutError:
        return "timed out"
    return "not timed out"
"""


def make_project(root: Path) -> Path:
    (root / "apps" / "quick").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "apps" / "__init__.py").write_text("")
    (root / "apps" / "quick" / "__init__.py").write_text("")
    (root / "apps" / "quick" / "views.py").write_text(VIEWS)
    (root / "apps" / "quick" / "routes.py").write_text(
        textwrap.dedent(
            """
            from .views import *

            PATH_PREFIX = ""
            APP_STATIC_DIR = None
            routes = {}
            ws_rules = {n: globals()[n] for n in ("quick", "slow", "mark", "peek", "keep", "timed")}
            """
        )
    )
    (root / "server.yml").write_text(
        "http_host: 127.0.0.1\nws_server_on: false\napps:\n  - quick\n"
    )
    return root


@asynccontextmanager
async def pipelined(tmp_path: Path, **overrides: object) -> AsyncIterator[Pipeline]:
    server = TestServer(project_app(make_project(tmp_path / "proj"), **overrides), host="127.0.0.1")
    await server.start_server()
    try:
        client = await Pipeline.open(f"ws://127.0.0.1:{server.port}/ws")
        try:
            yield client
        finally:
            client.writer.close()
    finally:
        await server.close()


class Pipeline:
    """A client that sends many messages in one socket write (framing: websockets' sans-I/O)."""

    def __init__(
        self, protocol: ClientProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.protocol, self.reader, self.writer = protocol, reader, writer
        self.received: list[str] = []

    @classmethod
    async def open(cls, url: str) -> Pipeline:
        uri = parse_uri(url)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(uri.host, uri.port), TIMEOUT
        )
        client = cls(ClientProtocol(uri), reader, writer)
        client.protocol.send_request(client.protocol.connect())
        await client.send_all([])
        while client.protocol.state.name != "OPEN":
            await client._read()
        return client

    async def send_all(self, texts: list[str]) -> None:
        for text in texts:
            self.protocol.send_text(text.encode())
        self.writer.write(b"".join(self.protocol.data_to_send()))  # one write
        await asyncio.wait_for(self.writer.drain(), TIMEOUT)

    async def _read(self) -> None:
        data = await asyncio.wait_for(self.reader.read(1 << 16), TIMEOUT)
        assert data, "the server hung up"
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.received.append(event.data.decode())

    async def replies(self, count: int, timeout: float = TIMEOUT) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            try:
                await asyncio.wait_for(self._read(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise AssertionError(f"{len(self.received)} of {count}: {self.received}") from None
        got, self.received = self.received[:count], self.received[count:]
        return got


async def test_hundred_quick_calls_in_one_write_are_all_answered(tmp_path: Path) -> None:
    async with pipelined(tmp_path) as client:  # the default ws_max_tasks: 32
        await client.send_all([f"quick|{n}" for n in range(100)])
        got = await client.replies(200)
    assert not [g for g in got if "too_many_tasks" in g], got[:3]
    assert sorted(got) == sorted(
        [f"sent|{n}" for n in range(100)] + [f"quick|{n}" for n in range(100)]
    )


async def test_calls_that_wait_are_still_limited_among_quick_ones(tmp_path: Path) -> None:
    async with pipelined(tmp_path, ws_max_tasks=4) as client:
        # Quick calls never take a slot; the slow ones take the 4, the other 2 are refused.
        await client.send_all([f"quick|{n}" for n in range(100)] + ["slow|"] * 6)
        got = await client.replies(200 + 2)  # the quick ones' two frames, two refusals
        refused = [g for g in got if "too_many_tasks" in g]
        assert len(refused) == 2 and all(
            g.startswith("error|too_many_tasks,slow,") for g in refused
        )
        assert await client.replies(4, timeout=3.0) == ["slow|late"] * 4


async def test_what_a_call_sets_in_its_context_stays_in_that_call(tmp_path: Path) -> None:
    async with pipelined(tmp_path) as client:
        await client.send_all(["mark|a", "peek|", "keep|b", "peek|"])
        got = await client.replies(4)
        assert got[:2] == ["marked|a", "peek|unset"]  # the receive loop never saw "a"
        assert sorted(got[2:]) == ["keep|b", "peek|unset"]  # "keep" kept its own across a wait


async def test_timeout_entered_before_the_first_wait_cancels_only_its_call(tmp_path: Path) -> None:
    """asyncio.timeout() finds the call's task as the current one, even in its first step."""
    async with pipelined(tmp_path) as client:
        await client.send_all(["timed|"])
        assert await client.replies(1) == ["timed|timed out"]
        await client.send_all(["quick|still here"])  # the receive loop was not cancelled
        assert await client.replies(2) == ["sent|still here", "quick|still here"]
