"""One ordered, bounded path for every frame to one client.

Rule replies, pushes from endless rules, ``send_func``, ``hub.send``, group
messages and broadcasts all go through a connection's :class:`Outbound`, so
a client receives them in the order they were produced, compressed or not.

* **Write-through**: with nothing waiting, a frame is handed to aiohttp's
  writer at once (its send coroutine is driven one step, which finishes
  unless aiohttp has to wait: a paused transport, or a large compressed frame
  going to a thread). Only then do later frames queue behind it, and one task
  per connection (made when needed) sends them in order.
* **Bounded in bytes and time**: what waits for one client (its queued
  frames plus the socket's write buffer) stays under ``max_bytes`` and
  ``limit`` frames, what waits for all the clients of a hub under its
  :class:`SendBudget`, and no frame waits longer than ``timeout`` seconds to
  be handed to the socket. The frame that would go over a bound is refused,
  everything queued for that client is dropped, and the client is closed with
  1013 (try again later): a client that stops reading cannot grow the
  server's memory. The bytes are looked at only when a frame has to wait, so
  the write-through path costs nothing more; a client with nothing queued
  holds at most what aiohttp's flow control lets into the socket's buffer
  (about 128 KiB) before its next frame has to wait.
* **Backpressure for one producer**: :meth:`Outbound.write` returns a future
  when its frame had to queue; a sender that awaits it (``conn.send_text``)
  never has more than one frame waiting. Deliveries that must not wait on a
  client (``hub.send_group``) use :meth:`Outbound.offer`.

:class:`CorkedTransport` sits between aiohttp's writer and the socket: what one
turn of the event loop writes to a client leaves in one system call instead
of one per frame (``docs/architecture.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from aiohttp import WSMsgType, web

from ..limits import SEND_BUFFER, SEND_TIMEOUT
from .stats import Stats

__all__ = ["ConnectionClosed", "CorkedTransport", "Outbound", "SendBudget", "resume"]


Payload = str | bytes


#: Called when a client goes over a bound: why, bytes and frames waiting, frames dropped.
OnFull = Callable[[str, int, int, int], None]


class ConnectionClosed(ConnectionError):
    """Raised by a send on a connection that has closed; ends the handler quietly."""


class CorkedTransport:
    """The transport aiohttp's websocket writer writes to: the replies to one read, one write.

    When bytes arrive from the client, :meth:`schedule` arms it: until the
    callback it schedules (right behind the reader's turn, or behind the calls
    it started, on Pythons without eager tasks) has run, writes are collected,
    and then passed on together. They are passed on at once when
    they reach ``limit`` bytes or a control frame (ping, pong, close) is
    written, so a close never waits behind data and aiohttp's flow control
    sees the real transport's buffer. Unarmed (a push, a group message between
    reads), a write goes straight through: one frame gains nothing by waiting.
    """

    __slots__ = ("_armed", "_chunks", "_limit", "_loop", "_real", "_size")

    def __init__(self, real: asyncio.Transport, *, limit: int = 64 * 1024) -> None:
        self._real = real
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._armed = 0  # callbacks scheduled by schedule() that have not run yet

    def write(self, data: bytes) -> None:
        if not self._armed:
            self._real.write(data)
            return
        self._chunks.append(data)
        self._size += len(data)
        # A frame's first byte: opcodes 0x8-0xF (bit 3) are control frames. Payload
        # bytes written on their own may look like one too: that only flushes early.
        if self._size >= self._limit or data[0] & 0x08:
            self.flush()

    def schedule(self) -> None:
        """Collect writes until after what the loop has ready now (the reader's turn)."""
        self._armed += 1
        self._loop.call_soon(self._release)

    def _release(self) -> None:
        # Every release flushes, so data never waits longer than one loop turn,
        # however often a busy client re-arms it.
        self._armed -= 1
        self.flush()

    def flush(self) -> None:
        chunks = self._chunks
        if not chunks:
            return
        self._chunks = []
        self._size = 0
        if not self._real.is_closing():
            self._real.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size() + self._size

    def close(self) -> None:
        self.flush()
        self._real.close()

    def abort(self) -> None:
        self._chunks = []
        self._real.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@types.coroutine
def resume(coro: Coroutine[Any, Any, Any], waiting: Any) -> Generator[Any, None, None]:
    """Finish ``coro``, which already ran up to awaiting ``waiting`` (a future)."""
    while True:
        try:
            yield waiting
        except BaseException as exc:  # a cancellation (or anything) thrown into the task
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = coro.send(None)
            except StopIteration:
                return


class SendBudget:
    """The bytes waiting for all the clients of one hub, and how many may (``limit``).

    Each :class:`Outbound` with frames waiting charges what waits for its
    client (queued frames and socket buffer) and gives it back once sent.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


def _size(data: Payload) -> int:
    """Bytes ``data`` takes on the wire (isascii() is O(1); encoding only for the rest)."""
    if type(data) is str:
        return len(data) if data.isascii() else len(data.encode())
    return len(data)


#: Where an outbound path of no hub counts (never exported).
_UNCOUNTED = Stats()


class Outbound:
    """The frames on their way to one client (see the module's docstring).

    It counts the frames it hands to the socket and the ones it drops into
    ``stats`` (its hub's :class:`~tranzit.ws.stats.Stats`).
    """

    __slots__ = (
        "_budget",
        "_busy",
        "_bytes",
        "_charged",
        "_frames",
        "_full",
        "_id",
        "_limit",
        "_loop",
        "_max_bytes",
        "_on_full",
        "_pump",
        "_queue",
        "_since",
        "_stats",
        "_timeout",
        "_timer",
        "_transport",
        "_ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        limit: int,
        on_full: OnFull,
        name: str = "",
        max_bytes: int = SEND_BUFFER,
        timeout: float | None = SEND_TIMEOUT,
        budget: SendBudget | None = None,
        transport: asyncio.WriteTransport | CorkedTransport | None = None,
        stats: Stats = _UNCOUNTED,
    ) -> None:
        self._ws = ws
        self._stats = stats
        # aiohttp's frame writer when the response exposes it (StrictWebSocketResponse):
        # a text frame is then one coroutine instead of two. Else ws.send_str.
        self._frames = getattr(ws, "frame_writer", None)
        self._limit = limit
        self._max_bytes = max_bytes
        self._timeout = timeout or None
        self._budget = budget
        self._transport = transport
        self._on_full = on_full
        self._id = name
        self._loop = asyncio.get_running_loop()
        # (frame, its waiter, its size in bytes, when it was queued)
        self._queue: deque[tuple[Payload, asyncio.Future[None] | None, int, float]] = deque()
        self._bytes = 0  # the queued frames' sizes
        self._charged = 0  # what this client holds of the budget
        self._busy = False  # a send is under way: later frames wait in the queue
        self._full = False  # over a bound: the client is being closed, nothing more goes out
        self._pump: asyncio.Task[None] | None = None
        self._since = 0.0  # when the frame being sent was queued
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def waiting_bytes(self) -> int:
        """Bytes waiting for this client: queued frames and the socket's write buffer."""
        transport = self._transport
        return self._bytes + (transport.get_write_buffer_size() if transport is not None else 0)

    def write(self, data: Payload) -> asyncio.Future[None] | None:
        """Send ``data`` after everything before it.

        Returns None when it was handed to the transport at once, else a future
        done once it has been. Raises :class:`ConnectionClosed` when the client
        is gone or is being closed for being too slow.
        """
        if self._busy:
            return self._enqueue(data, True)
        if self._ws.closed or self._full:
            raise ConnectionClosed(f"connection {self._id} is closed")
        self._send_now(data)
        return None

    def offer(self, data: Payload) -> None:
        """Send ``data`` after everything before it, never waiting (deliveries).

        A client that is gone, or over a bound, is skipped.
        """
        try:
            if self._busy:
                self._enqueue(data, False)
            elif not self._ws.closed and not self._full:
                self._send_now(data)
        except ConnectionClosed:
            pass

    def _start_send(self, data: Payload) -> Coroutine[Any, Any, None]:
        """The send coroutine of one frame (not started)."""
        if type(data) is str:
            frames = self._frames
            if frames is not None:
                return frames.send_frame(data.encode(), WSMsgType.TEXT)  # type: ignore[no-any-return]
            return self._ws.send_str(data)
        return self._ws.send_bytes(data)  # type: ignore[arg-type]

    def _send_now(self, data: Payload) -> None:
        coro = self._start_send(data)
        try:
            waiting = coro.send(None)
        except StopIteration:
            self._stats.messages_out += 1
            return
        except ConnectionError as exc:  # aiohttp: "Cannot write to closing transport"
            raise ConnectionClosed(f"connection {self._id} is closed") from exc
        # aiohttp has to wait (the socket's buffer is full, or deflate runs in a
        # thread): from here the client's bytes count, and the rest of this send,
        # then the queue, go on in a task.
        why = self._over(self.waiting_bytes())
        if why is not None:
            coro.close()
            self._overflow(why, 1)
        self._busy = True
        self._since = loop_time = self._loop.time()
        self._pump = self._loop.create_task(
            self._drain(resume(coro, waiting)), name=f"tranzit-outbound-{self._id}"
        )
        if self._timeout is not None:
            self._timer = self._loop.call_at(loop_time + self._timeout, self._check_time)

    def _enqueue(self, data: Payload, wait: bool) -> asyncio.Future[None] | None:
        if self._full or self._ws.closed:
            raise ConnectionClosed(f"connection {self._id} is closed")
        size = _size(data)
        if len(self._queue) >= self._limit:
            why: str | None = f"ws_send_queue: {self._limit} frames"
        else:
            why = self._over(self.waiting_bytes() + size)
        if why is not None:
            self._overflow(why, len(self._queue) + 1)
        waiter = self._loop.create_future() if wait else None
        self._queue.append((data, waiter, size, self._loop.time()))
        self._bytes += size
        return waiter

    def _over(self, waiting: int) -> str | None:
        """Why ``waiting`` bytes are too many for this client (None: they are not); charges them."""
        if waiting > self._max_bytes:
            return f"ws_send_buffer: {self._max_bytes} bytes"
        budget = self._budget
        if budget is not None:
            used = budget.used + waiting - self._charged
            if waiting > self._charged and used > budget.limit:
                return f"ws_send_buffer_total: {budget.limit} bytes for all clients"
            budget.used = used
            self._charged = waiting
        return None

    def _overflow(self, why: str, dropped: int) -> None:
        """Over a bound: drop what waits, tell the connection (it closes), refuse the frame."""
        waiting, frames = self.waiting_bytes(), len(self._queue)
        self._full = True
        self._drop()
        self._stats.frames_dropped += dropped
        self._on_full(why, waiting, frames, dropped)
        raise ConnectionClosed(f"connection {self._id} is too slow; closing it")

    def _check_time(self) -> None:
        # One timer per stalled pump, moved on as frames go out (not one per frame).
        self._timer = None
        if self._pump is None or self._full or self._timeout is None:
            return
        deadline = self._since + self._timeout
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check_time)
            return
        with contextlib.suppress(ConnectionClosed):
            self._overflow(
                f"ws_send_timeout: a frame waited {self._timeout:g} s", len(self._queue) + 1
            )

    async def _drain(self, first: Any) -> None:
        queue = self._queue
        try:
            await first
            stats = self._stats
            stats.messages_out += 1
            self._recount()
            while queue:
                data, waiter, size, self._since = queue.popleft()
                self._bytes -= size
                await self._start_send(data)
                stats.messages_out += 1
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                self._recount()
        except ConnectionError:
            self._fail_waiting()
        except asyncio.CancelledError:
            self._fail_waiting()
            raise
        finally:
            self._busy = False
            self._pump = None
            self._release()

    def _recount(self) -> None:
        """What this client holds of the budget, after a frame went out (never refuses)."""
        budget = self._budget
        if budget is not None:
            waiting = self.waiting_bytes()
            budget.used += waiting - self._charged
            self._charged = waiting

    def _release(self) -> None:
        """Nothing waits in the queue any more: give the budget back, stop the clock."""
        if self._budget is not None:
            self._budget.used -= self._charged
        self._charged = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop(self) -> None:
        """Stop sending: cancel the send under way, fail the waiters, forget the queue."""
        pump = self._pump
        if pump is not None:
            pump.cancel()
        self._fail_waiting()
        self._release()

    def _fail_waiting(self) -> None:
        queue = self._queue
        self._bytes = 0
        while queue:
            waiter = queue.popleft()[1]
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionClosed(f"connection {self._id} is closed"))

    async def close(self) -> None:
        """Stop sending (the connection is closing): what still waits is dropped."""
        pump = self._pump
        self._drop()
        if pump is not None:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await pump
