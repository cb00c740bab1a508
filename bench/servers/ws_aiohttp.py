"""The raw aiohttp peer: ``web.WebSocketResponse()`` echoing every text message.

``broadcast|<payload>`` sends ``b|<payload>`` to every open connection, then
answers the sender ``broadcast|<seconds the loop took>`` (as the tranzit rule).

    python -m bench.servers.ws_aiohttp PORT
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from .loop import run

CONNECTIONS = web.AppKey("connections", set)


async def handle(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    connections: set[web.WebSocketResponse] = request.app[CONNECTIONS]
    connections.add(ws)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            if msg.data.startswith("broadcast|"):
                await broadcast(connections, msg.data[len("broadcast|") :], ws)
            else:
                await ws.send_str(msg.data)
    finally:
        connections.discard(ws)
    return ws


async def broadcast(
    connections: set[web.WebSocketResponse], payload: str, sender: web.WebSocketResponse
) -> None:
    started = time.perf_counter()
    message = "b|" + payload
    for ws in list(connections):
        try:  # noqa: SIM105 - suppress() costs a context manager per send in a hot loop
            await ws.send_str(message)
        except ConnectionError:
            pass
    await sender.send_str("broadcast|%.6f" % (time.perf_counter() - started))


def main(port: int) -> None:
    async def start() -> Callable[[], Awaitable[None]]:
        app = web.Application()
        app[CONNECTIONS] = set()
        app.router.add_get("/{path:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner.cleanup

    run(start)


if __name__ == "__main__":
    main(int(sys.argv[1]))
