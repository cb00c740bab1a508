"""One websocket client: its id and state, its outbound path, its running calls.

A connection knows nothing of groups: :meth:`Connection.join` and
:meth:`Connection.leave` ask the hub it belongs to, which alone keeps the
membership (:mod:`tranzit.ws.hub`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, Protocol

from aiohttp import WSCloseCode, web

from ..limits import SEND_QUEUE
from .outbound import ConnectionClosed, Outbound

__all__ = ["Connection", "ConnectionClosed", "ConnectionRegistry", "Membership"]

log = logging.getLogger("tranzit.ws")

_ids = itertools.count(1)
# Ids stay unique across replicas (containers often all run as pid 1).
_PREFIX = secrets.token_hex(4)


if sys.version_info >= (3, 12):

    def _new_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name, eager_start=True)

else:

    def _new_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro, name=name)


class Membership(Protocol):
    """What a connection asks of its hub (the hub keeps who is in which group)."""

    def join(self, conn: Connection, group: str) -> None: ...
    def leave(self, conn: Connection, group: str) -> None: ...
    def groups_of(self, conn: Connection) -> frozenset[str]: ...


class Connection:
    """A connected client, the first argument of every rule handler.

    Everything sent to it goes through its :class:`~tranzit.ws.outbound.Outbound`,
    in order. ``await conn.send_text(...)`` returns once the frame is on its way;
    when frames are already waiting for this client it waits its turn.
    """

    __slots__ = ("_cork", "_out", "_tasks", "_ws", "hub", "id", "request", "state")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        send_queue: int = SEND_QUEUE,
        hub: Membership | None = None,
    ) -> None:
        self.id = f"{_PREFIX}-{next(_ids)}"
        self.request = request
        self.state: dict[str, Any] = {}
        self.hub = hub
        self._ws = ws
        self._cork = getattr(ws, "cork", None)
        self._out = Outbound(ws, limit=send_queue, on_full=self._too_slow, name=self.id)
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<Connection {self.id} tasks={len(self._tasks)} closed={self.closed}>"

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property
    def outbound(self) -> Outbound:
        return self._out

    async def send_text(self, text: str) -> None:
        """Send one text message; raises :class:`ConnectionClosed` once the client is gone."""
        waiter = self._out.write(text)
        if waiter is not None:
            await waiter

    async def send_json(self, obj: Any) -> None:
        """Send ``obj`` as one JSON text message (UTF-8, not ASCII-escaped)."""
        await self.send_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message."""
        waiter = self._out.write(data)
        if waiter is not None:
            await waiter

    def offer(self, text: str) -> None:
        """Send ``text`` without waiting (group and broadcast deliveries): a slow client
        is closed with 1013 rather than slowing the sender down."""
        self._out.offer(text)

    async def close(self, code: int = WSCloseCode.OK, message: str = "") -> None:
        """Close with ``code``; the endpoint then cancels this connection's handlers."""
        await self._ws.close(code=code, message=message.encode())

    def _too_slow(self) -> None:
        log.warning(
            "connection %s is too slow: %d frames wait for it; closing it with 1013",
            self.id,
            len(self._out),
        )
        self.start(self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow"), f"tranzit-close-{self.id}")

    # Groups (kept by the hub) -----------------------------------------------

    def join(self, group: str) -> None:
        """Join ``group``: messages sent to it reach this client (see :class:`Hub`)."""
        self._hub().join(self, group)

    def leave(self, group: str) -> None:
        self._hub().leave(self, group)

    @property
    def groups(self) -> frozenset[str]:
        """The groups this connection is in."""
        return self._hub().groups_of(self) if self.hub is not None else frozenset()

    def _hub(self) -> Membership:
        if self.hub is None:
            raise RuntimeError(f"connection {self.id} belongs to no hub")
        return self.hub

    # Calls -------------------------------------------------------------------

    @property
    def task_count(self) -> int:
        """Calls still running: ones that are waiting on something."""
        return len(self._tasks)

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task owned by this connection (cancelled when it closes).

        On Python 3.12+ the task starts eagerly: it runs up to its first real
        suspension at once, so a call that answers without waiting finishes
        here and costs no trip through the event loop, and is never counted as
        running; one that waits carries on as an ordinary task, concurrently
        with the others.
        """
        task = _new_task(coro, name)
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if self._cork is not None:  # its first step's replies join the batch
                self._cork.schedule()
        return task

    async def cancel_tasks(self) -> None:
        """Cancel every call still running, stop sending, and wait until all have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._out.close()


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
        """Calls running across all connections."""
        return sum(conn.task_count for conn in self._connections.values())

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: str = "") -> None:
        """Close every connection (server shutdown: 1001) and cancel their calls."""
        conns = list(self._connections.values())
        if conns:
            log.info("closing %d websocket connection(s) with code %d", len(conns), code)
        await asyncio.gather(*(conn.cancel_tasks() for conn in conns), return_exceptions=True)
        await asyncio.gather(*(conn.close(code, message) for conn in conns), return_exceptions=True)
