"""The ``websockets`` library peer (its asyncio server, on uvloop): text echo.

python -m bench.servers.ws_websockets PORT
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve

from .loop import run


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def main(port: int) -> None:
    async def start() -> Callable[[], Awaitable[None]]:
        server = await serve(echo, "127.0.0.1", port)

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return stop

    run(start)


if __name__ == "__main__":
    main(int(sys.argv[1]))
