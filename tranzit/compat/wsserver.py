"""The 2018 standalone ``WebSocketServer(host, port, api)``, on the core's endpoint."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiohttp import WSCloseCode, web

from ..limits import HEARTBEAT, MAX_MESSAGE_SIZE, MAX_TASKS, SEND_QUEUE
from ..serve import run_coroutine, run_until_signal, start_site
from ..ws.connection import Connection, ConnectionClosed, ConnectionRegistry
from ..ws.endpoint import EndpointSettings, websocket_endpoint
from ..ws.hub import HUB, Hub
from ..ws.rules import resolve

__all__ = ["LegacyApi", "WebSocketServer"]

log = logging.getLogger("tranzit.ws")


class LegacyApi(Protocol):
    async def handle_text(self, loop: asyncio.AbstractEventLoop, writer: Any, msg: str) -> Any: ...


class _ApiDispatcher:
    """Hands each message to the old ``api`` object, as a task owned by its connection."""

    def __init__(self, api: Any, max_tasks: int) -> None:
        self.api = api
        self.max_tasks = max_tasks

    def on_text(self, conn: Connection, text: str) -> None:
        self._start(conn, "handle_text", text)

    def on_binary(self, conn: Connection, data: bytes) -> None:
        self._start(conn, "handle_binary", data)

    def _start(self, conn: Connection, method: str, payload: str | bytes) -> None:
        handler = getattr(self.api, method, None)
        if handler is None:
            log.warning("api %r has no %s(); message dropped", type(self.api).__name__, method)
            return
        if conn.task_count >= self.max_tasks:
            log.warning("connection %s runs %d handlers; closing it", conn.id, conn.task_count)
            conn.start(
                conn.close(WSCloseCode.TRY_AGAIN_LATER, "too many running handlers"),
                f"tranzit-close-{conn.id}",
            )
            return
        conn.start(self._run(handler, conn, payload), name=f"tranzit-{method}-{conn.id}")

    async def _run(self, handler: Any, conn: Connection, payload: str | bytes) -> None:
        try:
            await resolve(handler(asyncio.get_running_loop(), conn, payload))
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("websocket api handler %r raised", handler)


class WebSocketServer:
    """A websocket server driving an object with ``handle_text(loop, writer, msg)``.

    ``handle_binary(loop, writer, data)`` gets bytes. Fragmented messages are
    reassembled before they reach the api, so ``handle_buffered`` is never
    called; it may still exist on old classes. The ``writer`` is the client's
    :class:`~tranzit.ws.connection.Connection`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 19719,
        api: Any = None,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        heartbeat: float | None = HEARTBEAT,
        max_tasks: int = MAX_TASKS,
        send_queue: int = SEND_QUEUE,
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        if api is None:
            raise TypeError("WebSocketServer needs an api object with handle_text()")
        self.host = host
        self.port = port
        self.api = api
        self.hub = Hub(send_queue=send_queue)
        self.registry: ConnectionRegistry = self.hub.connections
        settings = EndpointSettings(max_message_size, heartbeat, allowed_origins)
        self._handler = websocket_endpoint(_ApiDispatcher(api, max_tasks), settings, self.hub)
        self._runner: web.AppRunner | None = None

    @staticmethod
    async def send_text(writer: Connection, text: str) -> None:
        """Send one text message to the client behind ``writer``."""
        await writer.send_text(text)

    @staticmethod
    async def send_binary(writer: Connection, data: bytes) -> None:
        await writer.send_bytes(data)

    def make_app(self) -> web.Application:
        app = web.Application()
        app[HUB] = self.hub
        app.router.add_get("/{path:.*}", self._handler)

        async def close_connections(app: web.Application) -> None:
            await self.registry.close_all()

        app.on_shutdown.append(close_connections)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.make_app(), shutdown_timeout=1.0)
        await self._runner.setup()
        self.port = await start_site(self._runner, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def run_forever(self) -> None:
        """Serve until SIGINT/SIGTERM; exits cleanly, closing clients with 1001."""

        async def main() -> None:
            await self.start()
            log.info("websocket server on ws://%s:%d", self.host, self.port)
            try:
                await run_until_signal()
            finally:
                await self.stop()

        run_coroutine(main())
