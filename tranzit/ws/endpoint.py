"""The aiohttp side of a websocket: handshake checks, the receive loop, shutdown.

This module and :mod:`tranzit.ws.server` are the only ones that touch aiohttp's
websocket objects. Messages go to a :class:`Dispatcher`; the rule dispatcher
decodes them with :mod:`tranzit.ws.protocol` and runs handlers from the
:class:`~tranzit.ws.rules.RuleTable`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from inspect import isawaitable
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from . import protocol
from .connection import Connection, ConnectionClosed, ConnectionRegistry
from .hub import Hub
from .rules import Rule, RuleTable
from .strict import StrictWebSocketResponse

__all__ = [
    "REGISTRY",
    "Dispatcher",
    "EndpointSettings",
    "RuleDispatcher",
    "origin_allowed",
    "websocket_endpoint",
]

log = logging.getLogger("tranzit.ws")

#: The connections of an app's websocket endpoint (``app[HUB].connections``).
REGISTRY = web.AppKey("tranzit.ws.registry", ConnectionRegistry)

# Time a close handshake may take before the socket is dropped; shutdown stays fast.
CLOSE_TIMEOUT = 1.0
# What the access log shows for a client that left before the handshake completed.
CLIENT_CLOSED_REQUEST = 499


class Dispatcher(Protocol):
    async def on_text(self, conn: Connection, text: str) -> None: ...
    async def on_binary(self, conn: Connection, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    max_message_size: int = 1024 * 1024
    heartbeat: float | None = 20.0
    send_queue: int = 64
    allowed_origins: tuple[str, ...] = ()
    #: Pages on the same host name at these ports may connect too: the standalone
    #: websocket port serves pages of the HTTP port (old projects' ``ws://host:19719``).
    sibling_ports: tuple[int, ...] = ()


class RuleDispatcher:
    """Runs ``ws_rules`` handlers for incoming messages, each as a tracked task."""

    def __init__(self, rules: RuleTable, *, max_tasks: int = 32) -> None:
        self.rules = rules
        self.max_tasks = max_tasks

    async def on_text(self, conn: Connection, text: str) -> None:
        decision = protocol.plan(
            text, self.rules, running=conn.task_count, max_tasks=self.max_tasks
        )
        if isinstance(decision, protocol.Refuse):
            await conn.send_text(decision.reply)
            return
        call = decision.call
        rule = self.rules[call.rule]
        prepared = rule.prepare(call)
        if isinstance(prepared, str):
            await conn.send_text(
                protocol.encode_error(
                    protocol.BAD_ARGUMENTS, prepared, form=call.form, rule=call.rule, id=call.id
                )
            )
            return
        conn.start(self._run(conn, rule, prepared), name=f"tranzit-rule-{call.rule}-{conn.id}")

    async def _run(self, conn: Connection, rule: Rule, call: protocol.Call) -> None:
        try:
            value = rule.invoke(conn, call)
            if isawaitable(value):  # async handlers; plain functions answer directly
                value = await value
            reply = protocol.encode_result(call, value, connection_style=rule.connection_style)
            if reply is not None:
                await conn.send_text(reply)
        except ConnectionClosed:
            pass  # the client went away mid-handler; nothing to tell anyone
        except Exception as exc:
            log.exception("websocket rule %r (app %r) raised", call.rule, rule.app)
            message = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(ConnectionClosed):
                await conn.send_text(
                    protocol.encode_error(
                        protocol.HANDLER_ERROR, message, form=call.form, rule=call.rule, id=call.id
                    )
                )

    async def on_binary(self, conn: Connection, data: bytes) -> None:
        await conn.send_text(
            protocol.encode_error(
                protocol.BINARY_UNSUPPORTED,
                "this endpoint takes text messages (rule|args or a JSON call)",
            )
        )


def origin_allowed(
    origin: str | None,
    host: str | None,
    allowed: Collection[str],
    sibling_ports: Collection[int] = (),
) -> bool:
    """Browsers send ``Origin``; it must be the serving host or listed. No header: not a browser.

    ``sibling_ports``: an origin on the same host name at one of these ports is
    accepted too (a page of the HTTP port talking to the websocket port).
    """
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    parts = urlsplit(origin)
    if not parts.netloc or host is None:
        return False
    if parts.netloc.lower() == host.lower():
        return True
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return False
    host_name = urlsplit(f"//{host}").hostname
    return port in sibling_ports and parts.hostname is not None and parts.hostname == host_name


def websocket_endpoint(
    dispatcher: Dispatcher,
    settings: EndpointSettings,
    hub: Hub,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler serving the websocket protocol with ``dispatcher``."""
    allowed = frozenset(o.rstrip("/") for o in settings.allowed_origins)

    async def handle(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.host, allowed, settings.sibling_ports):
            log.warning("refused websocket from origin %r (host %r)", origin, request.host)
            raise web.HTTPForbidden(text=f"origin {origin!r} is not allowed\n")
        ws = StrictWebSocketResponse(
            heartbeat=settings.heartbeat,
            max_msg_size=settings.max_message_size,
            timeout=CLOSE_TIMEOUT,
        )
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="expected a websocket upgrade request\n")
        try:
            await ws.prepare(request)
        except ConnectionResetError:
            # The client (or a proxy giving up on it) hung up before the 101 went out:
            # routine under load, not an error. 499 as nginx logs it; nothing is sent.
            log.debug("websocket client %s left during the handshake", request.remote)
            return web.Response(status=CLIENT_CLOSED_REQUEST, reason="Client Closed Request")
        conn = Connection(ws, request, send_queue=settings.send_queue, hub=hub)
        hub.connections.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await dispatcher.on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await dispatcher.on_binary(conn, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    log.info("websocket %s closed on error: %s", conn.id, ws.exception())
                    break
        except ConnectionClosed:
            pass
        finally:
            hub.forget(conn)
            await conn.cancel_tasks()
            if not ws.closed:
                await ws.close()
        return ws

    return handle
