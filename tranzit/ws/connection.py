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
from collections.abc import Coroutine, Generator, Iterator
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSCloseCode, web

from ..limits import SEND_QUEUE
from ..throttle import Throttle
from .outbound import ConnectionClosed, Outbound, SendBudget
from .stats import Stats

if TYPE_CHECKING:
    from .backplane import Position
    from .hub import Joined

__all__ = ["Connection", "ConnectionClosed", "ConnectionRegistry", "Membership"]

log = logging.getLogger("tranzit.ws")

_ids = itertools.count(1)
# Ids stay unique across replicas (containers often all run as pid 1).
_PREFIX = secrets.token_hex(4)


# How long a client closed for being too slow gets for the close handshake; then
# its socket is dropped with everything still buffered for it.
SLOW_CLOSE_TIMEOUT = 1.0


if sys.version_info >= (3, 12):

    def _new_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name, eager_start=True)

    def _running(task: asyncio.Task[None]) -> bool:
        return not task.done()

else:
    # What 3.12's eager_start does itself: make the new task the current one while
    # its first step runs (asyncio.timeout() and TaskGroup look it up there).
    from asyncio.tasks import _enter_task, _leave_task

    class _Rest(Coroutine[Any, Any, None]):
        """A call whose first step already ran; its task steps the rest, in the call's context."""

        __slots__ = ("_context", "_coro", "_first", "_waiting", "done", "error")

        def __init__(self, coro: Coroutine[Any, Any, None], context: Context) -> None:
            self._coro = coro
            self._context = context
            self._first = True
            self._waiting: Any = None
            self.error: BaseException | None = None
            self.done = False

        def send(self, value: Any) -> Any:
            if self._first:  # the task's first step: hand it what the call waits on
                self._first = False
                if self.error is not None:
                    raise self.error
                if self.done:
                    raise StopIteration
                return self._waiting
            return self._context.run(self._coro.send, value)

        def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
            self._first = False
            if self.done:
                raise typ if val is None else val
            return self._context.run(self._coro.throw, typ if val is None else val)

        def close(self) -> None:
            self._coro.close()

        def __await__(self) -> Generator[Any, None, None]:
            raise TypeError("a call's task steps it; it is not awaited")

        def step(self) -> None:
            try:
                self._waiting = self._context.run(self._coro.send, None)
            except StopIteration:
                self.done = True
            except (KeyboardInterrupt, SystemExit):
                self.done = True
                raise
            except BaseException as exc:  # the task ends with it, as a task's own step would
                self.done = True
                self.error = exc

    def _new_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task whose first step runs now (eager start, emulated before 3.12).

        The call runs in a copy of the context, as in a task of its own, so what
        it sets does not reach the receive loop.
        """
        loop = asyncio.get_running_loop()
        rest = _Rest(coro, copy_context())
        task: asyncio.Task[None] = loop.create_task(rest, name=name)
        outer = asyncio.current_task(loop)
        if outer is not None:
            _leave_task(loop, outer)
        _enter_task(loop, task)
        try:
            rest.step()
        finally:
            _leave_task(loop, task)
            if outer is not None:
                _enter_task(loop, outer)
        if rest.done:
            # Finished without waiting: its task only has to notice (one loop step).
            task.add_done_callback(_retrieve)
        return task

    def _retrieve(task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            task.exception()

    def _running(task: asyncio.Task[None]) -> bool:
        """Whether the call is waiting on something (not merely not yet noticed done)."""
        rest = task.get_coro()
        return not task.done() and not (isinstance(rest, _Rest) and rest.done)


_slow_warnings = Throttle(period=1.0, burst=10)


class Membership(Protocol):
    """What a connection asks of its hub (the hub keeps who is in which group)."""

    def join(
        self,
        conn: Connection,
        group: str,
        *,
        since: Position | None = None,
        presence: bool = False,
        presence_events: bool = False,
    ) -> Joined: ...
    def leave(self, conn: Connection, group: str) -> None: ...
    def groups_of(self, conn: Connection) -> frozenset[str]: ...

    #: The send bounds of its connections (see :class:`~tranzit.ws.outbound.Outbound`).
    send_buffer: int
    send_timeout: float | None
    send_budget: SendBudget
    #: Counters for ``/metrics``.
    stats: Stats


class Connection:
    """A connected client, the first argument of every rule handler.

    Everything sent to it goes through its :class:`~tranzit.ws.outbound.Outbound`,
    in order. ``await conn.send_text(...)`` returns once the frame is on its way;
    when frames are already waiting for this client it waits its turn. A
    client that goes over a send bound (bytes, frames, ``send_timeout``) is
    closed with 1013 "too slow" and what waited for it is dropped.
    """

    __slots__ = (
        "_closer",
        "_cork",
        "_out",
        "_tasks",
        "_ws",
        "hub",
        "id",
        "request",
        "state",
        "user",
        "v2",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        send_queue: int = SEND_QUEUE,
        hub: Membership | None = None,
        v2: bool = False,
    ) -> None:
        self.id = f"{_PREFIX}-{next(_ids)}"
        #: Whether the client speaks protocol v2 (subprotocol ``tranzit.2``): group
        #: messages reach it with their positions, and it resumes after a reconnect.
        self.v2 = v2
        self.request = request
        self.state: dict[str, Any] = {}
        #: Who is connected: what the project's ``ws_connect`` hook returned (None without one).
        self.user: Any = None
        self.hub = hub
        self._ws = ws
        self._cork = getattr(ws, "cork", None)
        bounds: dict[str, Any] = {}
        if hub is not None:  # the hub's bounds, and its budget for all its clients
            bounds = {
                "max_bytes": hub.send_buffer,
                "timeout": hub.send_timeout,
                "budget": hub.send_budget,
                "stats": hub.stats,
            }
        self._out = Outbound(
            ws,
            limit=send_queue,
            on_full=self._too_slow,
            name=self.id,
            transport=self._cork or request.transport,
            **bounds,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._closer: asyncio.Task[None] | None = None

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

    def _too_slow(self, why: str, waiting: int, frames: int, dropped: int) -> None:
        """Over a send bound (the outbound path calls this once): log, close with 1013."""
        if self.hub is not None:
            self.hub.stats.slow_closes += 1
        held = _slow_warnings.allow()
        if held is not None:
            log.warning(
                "websocket %s from %s is too slow (over %s): %d bytes in %d frame(s) "
                "waited for it; closing it with 1013, dropped %d frame(s)%s",
                self.id,
                self.request.remote,
                why,
                waiting,
                frames,
                dropped,
                f"; {held} similar line(s) held back" if held else "",
            )
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                self._close_slow(), name=f"tranzit-close-{self.id}"
            )

    async def _close_slow(self) -> None:
        """Try the close frame; after SLOW_CLOSE_TIMEOUT drop the socket and what it buffers.

        The close frame leaves behind what the socket already buffers, so a
        client that reads again soon gets it; one that does not is aborted, and
        the buffer freed. Not one of the calls: those the endpoint cancels.
        """
        transport = self.request.transport
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SLOW_CLOSE_TIMEOUT
        try:
            await asyncio.wait_for(
                self._ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow", drain=False),
                SLOW_CLOSE_TIMEOUT,
            )
            # Closed: the socket sends what it buffers, then hangs up, if the client reads.
            while transport is not None and transport.get_write_buffer_size():
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(0.02)
        except (asyncio.TimeoutError, ConnectionError):
            pass  # it did not read its close frame either
        finally:
            if transport is not None and transport.get_write_buffer_size():
                transport.abort()

    # Groups (kept by the hub) -----------------------------------------------

    def join(
        self,
        group: str,
        *,
        since: Position | None = None,
        presence: bool = False,
        presence_events: bool = False,
    ) -> Joined:
        """Join ``group``: messages sent to it reach this client (see :class:`Hub`).

        Joins at once; ``await`` the result for the join point, or, with
        ``since`` (a :class:`~tranzit.ws.backplane.Position` the client saw
        last), to know whether what it missed was replayed. ``presence``
        counts this client in the group's presence; ``presence_events``
        sends it the group's join and leave events.
        """
        return self._hub().join(
            self, group, since=since, presence=presence, presence_events=presence_events
        )

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

        The task starts eagerly: it runs up to its first real suspension at
        once, so a call that answers without waiting finishes here and is never
        counted as running (before 3.12, where asyncio has no eager tasks, its
        task then only notices it is done); one that waits carries on as an
        ordinary task, concurrently with the others.
        """
        task = _new_task(coro, name)
        if _running(task):
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
        if self._closer is not None:  # bounded by SLOW_CLOSE_TIMEOUT
            await asyncio.gather(self._closer, return_exceptions=True)


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
