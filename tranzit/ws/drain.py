"""Closing a stopping server's websockets over a window, so their reconnects spread out.

A deploy that closed every client at once would send them all to the other
replicas in the same instant. :func:`drain` closes them with 1001 and the
reason ``reconnect`` in batches spread evenly over ``ws_drain_time``
seconds; tz.js then reconnects after a random delay up to the same time
instead of its usual backoff. Meanwhile ``/readyz`` answers 503, so a load
balancer stops sending new clients; the ones that still arrive are closed
too.
"""

from __future__ import annotations

import asyncio
import logging
import math

from aiohttp import WSCloseCode

from .connection import Connection, ConnectionRegistry

__all__ = ["BATCHES", "BATCH_INTERVAL", "CLOSE_BOUND", "DRAIN_REASON", "drain"]

log = logging.getLogger("tranzit.ws")

#: The reason of the 1001 close: tz.js reconnects with jitter instead of backing off.
DRAIN_REASON = "reconnect"
#: At most this many batches, and at least this many seconds between two.
BATCHES = 20
BATCH_INTERVAL = 0.05
#: Seconds one close may take (the close frame out, the client's answer back)
#: before its socket is dropped: a client that stopped reading holds nothing up.
CLOSE_BOUND = 1.0


async def drain(connections: ConnectionRegistry, window: float) -> None:
    """Close every connection in ``connections`` with 1001 ``reconnect`` over ``window`` s.

    The first batch goes at once, the others every ``window / batches``
    seconds; each batch closes its share of what is still open, connections
    that arrived since included. ``window`` 0 closes all at once. Returns when
    all are closed, or ``window`` + :data:`CLOSE_BOUND` seconds after it began.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    batches = max(1, min(BATCHES, int(window / BATCH_INTERVAL)))
    step = window / batches
    closing: dict[Connection, asyncio.Task[None]] = {}
    if len(connections):
        log.info("draining %d websocket connection(s) over %g s", len(connections), window)
    for batch in range(batches):
        if batch:
            await asyncio.sleep(start + batch * step - loop.time())
        waiting = _not_closing(connections, closing)
        if not waiting and all(task.done() for task in closing.values()):
            return  # nothing open: no reason to wait out the window
        for conn in waiting[: math.ceil(len(waiting) / (batches - batch))]:
            closing[conn] = loop.create_task(_close(conn), name=f"tranzit-drain-{conn.id}")
    # The last batch's closes, and newcomers (closed at once), until the deadline.
    deadline = start + window + CLOSE_BOUND
    while True:
        for conn in _not_closing(connections, closing):
            closing[conn] = loop.create_task(_close(conn), name=f"tranzit-drain-{conn.id}")
        running = [task for task in closing.values() if not task.done()]
        left = deadline - loop.time()
        if not running or left <= 0:
            break
        await asyncio.wait(running, timeout=min(BATCH_INTERVAL, left))
    for task in running:  # only newcomers of the last moment: shutdown closes them
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def _not_closing(
    connections: ConnectionRegistry, closing: dict[Connection, asyncio.Task[None]]
) -> list[Connection]:
    return [conn for conn in connections if conn not in closing and not conn.closed]


async def _close(conn: Connection) -> None:
    """Close ``conn`` with 1001 ``reconnect``; after :data:`CLOSE_BOUND` drop its socket."""
    try:
        await asyncio.wait_for(conn.close(WSCloseCode.GOING_AWAY, DRAIN_REASON), CLOSE_BOUND)
    except (asyncio.TimeoutError, ConnectionError):
        transport = conn.request.transport
        if transport is not None:  # what it buffers would keep the socket open
            transport.abort()
