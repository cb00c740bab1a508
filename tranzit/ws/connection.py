"""One websocket client: its bounded sends, its handler tasks, its id and state."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

__all__ = ["Connection", "ConnectionClosed", "ConnectionRegistry"]

log = logging.getLogger("tranzit.ws")

if TYPE_CHECKING:
    from .hub import Hub

_ids = itertools.count(1)
# Ids stay unique across replicas (containers often all run as pid 1).
_PREFIX = secrets.token_hex(4)


if sys.version_info >= (3, 12):

    def _new_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name, eager_start=True)

else:

    def _new_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro, name=name)


#: The largest websocket frame header a server writes (no mask key).
_FRAME_HEADER_MAX = 10


class ConnectionClosed(ConnectionError):
    """Raised by a send on a connection that has closed; ends the handler quietly."""


class Connection:
    """A connected client, handed to connection-style rule handlers.

    Sends are bounded: at most ``send_queue`` sends wait on a slow reader at a
    time; a further send waits for a slot, so a handler pushing faster than the
    client reads is slowed down instead of growing memory.
    """

    __slots__ = (
        "_outbox",
        "_pump",
        "_send_slots",
        "_sending",
        "_slow",
        "_tasks",
        "_wake",
        "_ws",
        "groups",
        "hub",
        "id",
        "request",
        "state",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        send_queue: int = 64,
        hub: Hub | None = None,
    ) -> None:
        self.id = f"{_PREFIX}-{next(_ids)}"
        self.request = request
        self.state: dict[str, Any] = {}
        self.groups: set[str] = set()
        self.hub = hub
        self._ws = ws
        self._send_slots = asyncio.Semaphore(send_queue)
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox: deque[str] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._sending = False  # the pump is inside a send
        self._pump: asyncio.Task[None] | None = None
        self._slow = False

    def __repr__(self) -> str:
        return f"<Connection {self.id} tasks={len(self._tasks)} closed={self.closed}>"

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send_text(self, text: str) -> None:
        """Send one text message; raises :class:`ConnectionClosed` once the client is gone."""
        await self._send(self._ws.send_str, text)

    async def send_json(self, obj: Any) -> None:
        """Send ``obj`` as one JSON text message (UTF-8, not ASCII-escaped)."""
        await self.send_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message."""
        await self._send(self._ws.send_bytes, data)

    async def _send(self, send: Callable[[Any], Awaitable[None]], payload: Any) -> None:
        if self._ws.closed:
            raise ConnectionClosed(f"connection {self.id} is closed")
        # acquire/release rather than ``async with``: one coroutine less per message.
        await self._send_slots.acquire()
        try:
            await send(payload)
        except ConnectionError as exc:
            raise ConnectionClosed(f"connection {self.id} is closed") from exc
        finally:
            self._send_slots.release()

    async def close(self, code: int = WSCloseCode.OK, message: str = "") -> None:
        """Close with ``code``; the endpoint then cancels this connection's handlers."""
        await self._ws.close(code=code, message=message.encode())

    # Groups --------------------------------------------------------------

    def join(self, group: str) -> None:
        """Join ``group``: messages sent to it reach this client (see :class:`Hub`)."""
        self._hub().join(self, group)

    def leave(self, group: str) -> None:
        self._hub().leave(self, group)

    def _hub(self) -> Hub:
        if self.hub is None:
            raise RuntimeError(f"connection {self.id} belongs to no hub")
        return self.hub

    def ready_now(self, text: str) -> bool:
        """Whether :meth:`send_now` of ``text`` completes without ever waiting.

        Only then does a broadcast write at once instead of queueing: nothing in
        the outbox and the pump not mid-send (so order is kept), no compression
        (aiohttp may compress in a thread and takes a lock), nothing unsent on
        the socket and a frame that cannot fill the transport's buffer past its
        high-water mark (aiohttp's writer waits only while the transport is
        paused). So a publisher never waits on a client, and a cancellation
        cannot land between two recipients.
        """
        if self._outbox or self._sending or self._ws.closed or self._ws.compress:
            return False
        transport = self.request.transport
        if transport is None or transport.get_write_buffer_size():
            return False
        high = transport.get_write_buffer_limits()[1]
        return 4 * len(text) + _FRAME_HEADER_MAX < high  # UTF-8: at most 4 bytes a character

    async def send_now(self, text: str) -> None:
        """Write ``text`` now (after :meth:`ready_now`); a client already gone is skipped."""
        try:  # noqa: SIM105 - hot path of every broadcast: no context manager per send
            await self._ws.send_str(text)
        except ConnectionError:
            pass

    def offer(self, text: str, limit: int) -> bool:
        """Queue ``text`` for this client without waiting (broadcast delivery).

        The outbox and the task that empties it are made on first use. Returns
        False when the outbox already holds ``limit`` messages: the client is
        too slow, and it is being closed with 1013.
        """
        if self._ws.closed or self._slow:
            return not self._slow
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
            self._pump = asyncio.get_running_loop().create_task(
                self._drain(outbox), name=f"tranzit-outbox-{self.id}"
            )
        if len(outbox) >= limit:
            self._slow = True
            self.start(self._close_slow(), name=f"tranzit-close-{self.id}")
            return False
        outbox.append(text)
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)
        return True

    async def _drain(self, outbox: deque[str]) -> None:
        """Send the outbox in order; sleep while it is empty.

        A deque and one future rather than an ``asyncio.Queue``: a broadcast
        wakes every connection's pump, and this costs a few microseconds less
        per connection. The pump is one sender, already bounded by the outbox,
        so it does not take a send slot.
        """
        loop = asyncio.get_running_loop()
        ws = self._ws
        try:
            while True:
                while outbox:
                    if ws.closed:
                        return
                    self._sending = True
                    try:
                        await ws.send_str(outbox.popleft())
                    finally:
                        self._sending = False
                self._wake = loop.create_future()
                await self._wake
        except ConnectionError:
            pass  # the client went away; the endpoint cleans up

    async def _close_slow(self) -> None:
        await self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow: outbox full")

    # Handler tasks -------------------------------------------------------

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task owned by this connection.

        On Python 3.12+ the task starts eagerly: it runs up to its first real
        suspension at once, so a handler that answers without waiting (most
        rules) finishes here and costs no trip through the event loop; one that
        waits carries on as an ordinary task, concurrently with the others.
        """
        task = _new_task(coro, name)
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_tasks(self) -> None:
        """Cancel every handler still running and wait until they have finished."""
        tasks = list(self._tasks)
        if self._pump is not None:
            tasks.append(self._pump)
            self._pump = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class ConnectionRegistry:
    """Every open connection of one endpoint, so shutdown can close them all."""

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._connections.values()))

    def get(self, connection_id: str) -> Connection | None:
        return self._connections.get(connection_id)

    def add(self, conn: Connection) -> None:
        self._connections[conn.id] = conn

    def discard(self, conn: Connection) -> None:
        self._connections.pop(conn.id, None)

    def task_count(self) -> int:
        """Handler tasks running across all connections."""
        return sum(conn.task_count for conn in self._connections.values())

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: str = "") -> None:
        """Close every connection (server shutdown: 1001) and cancel their handlers."""
        conns = list(self._connections.values())
        if conns:
            log.info("closing %d websocket connection(s) with code %d", len(conns), code)
        await asyncio.gather(*(conn.cancel_tasks() for conn in conns), return_exceptions=True)
        await asyncio.gather(*(conn.close(code, message) for conn in conns), return_exceptions=True)
