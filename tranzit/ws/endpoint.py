"""The aiohttp side of a websocket: handshake checks, the receive loop, shutdown.

Each message goes to a :class:`Dispatcher`. The rule dispatcher decides with
:func:`tranzit.ws.protocol.plan` (every refusal is decided there) and starts
the rule as a call owned by the connection; replies leave through the
connection's one outbound path.
"""

from __future__ import annotations

import logging
import secrets
import types
from collections.abc import Awaitable, Callable, Collection
from contextvars import copy_context
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from ..limits import HEARTBEAT, MAX_MESSAGE_SIZE, MAX_TASKS
from . import protocol
from .connection import Connection, ConnectionClosed
from .hub import Hub
from .outbound import resume
from .protocol import Refuse, plan
from .rules import Rule, RuleError, RuleTable
from .stats import Stats
from .strict import StrictWebSocketResponse, warn_if_hooks_missing

#: The websocket subprotocol of protocol v2 (positions and recovery; docs/protocol.md).
SUBPROTOCOL = "tranzit.2"
#: The built-in rule a v2 client calls first after reconnecting.
RESUME_RULE = "tz.resume"

__all__ = [
    "Dispatcher",
    "EndpointSettings",
    "RuleDispatcher",
    "origin_allowed",
    "websocket_endpoint",
]

log = logging.getLogger("tranzit.ws")

# Time a close handshake may take before the socket is dropped; shutdown stays fast.
CLOSE_TIMEOUT = 1.0
# What the access log shows for a client that left before the handshake completed.
CLIENT_CLOSED_REQUEST = 499
# What receive() returns once the connection is closing or closed.
_ENDS = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})
_NOT_STARTED: Any = object()


class Dispatcher(Protocol):
    """What the receive loop hands each message to; it must not wait (start tasks instead)."""

    def on_text(self, conn: Connection, text: str) -> None: ...
    def on_binary(self, conn: Connection, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    max_message_size: int = MAX_MESSAGE_SIZE
    heartbeat: float | None = HEARTBEAT
    allowed_origins: tuple[str, ...] = ()
    #: Pages on the same host name at these ports may connect too: the standalone
    #: websocket port serves the pages of the HTTP port.
    same_host_ports: tuple[int, ...] = ()
    #: ``ws_connect(request)``: accepts (its result is ``conn.user``) or raises an HTTP
    #: error to refuse, before the upgrade.
    connect: Callable[[web.Request], Any] | None = None


class RuleDispatcher:
    """Runs ``ws_rules`` handlers for incoming messages, each call as its own task."""

    __slots__ = ("_by_name", "expose_errors", "max_tasks", "rules", "stats")

    def __init__(
        self,
        rules: RuleTable,
        *,
        max_tasks: int = MAX_TASKS,
        expose_errors: bool = True,
        stats: Stats | None = None,
    ) -> None:
        self.rules = rules
        #: Calls and failures per rule (only the table's names: a client cannot add labels).
        self.stats = stats or Stats()
        self.max_tasks = max_tasks
        #: Whether a handler's exception text reaches the client (development), or only
        #: an error id that is also in the log (production).
        self.expose_errors = expose_errors
        # The built-in rules, unless the project defines the same names.
        self._by_name = {RESUME_RULE: _RESUME, **rules.by_name}
        self.stats.rules.update(self._by_name)

    def on_text(self, conn: Connection, text: str) -> None:
        by_name = self._by_name
        decision = plan(text, by_name, conn.task_count, self.max_tasks)
        if isinstance(decision, Refuse):
            conn.outbound.offer(decision.reply)
            return
        rule = by_name[decision.rule]
        rule.calls += 1
        stats = self.stats
        if rule.inline:
            _run_inline(conn, rule, decision, self.expose_errors, stats)
        else:
            conn.start(_run(conn, rule, decision, self.expose_errors, stats), rule.task_name)

    def on_binary(self, conn: Connection, data: bytes) -> None:
        conn.outbound.offer(
            protocol.encode_error(
                protocol.BINARY_UNSUPPORTED,
                "this endpoint takes text messages (rule|args or a JSON call)",
            )
        )


async def _resume(conn: Connection, groups: Any) -> Any:
    hub = conn.hub
    if not isinstance(hub, Hub):
        raise RuleError("this connection belongs to no hub", code="unavailable")
    return await hub.resume(conn, groups)


_RESUME = Rule(RESUME_RULE, "tranzit", _resume)


def _run_inline(
    conn: Connection, rule: Rule, call: protocol.Call, expose: bool, stats: Stats
) -> None:
    """A call that cannot wait (:func:`~tranzit.ws.rules.cannot_wait`), run now.

    In a copy of the context, as a task would run it; no task is made, as
    there is nothing a task would be needed for (it cannot suspend, so there
    is nothing to cancel). Its reply does not wait either.
    """
    context = copy_context()
    try:
        value: Any = context.run(rule.invoke, conn, call)
        if type(value) is types.CoroutineType:
            try:
                waiting = context.run(value.send, None)
            except StopIteration as done:
                value = done.value
            else:  # it did wait after all: the rest of it runs as a task
                task = _run(conn, rule, call, expose, stats, resume(value, waiting))
                conn.start(task, rule.task_name)
                return
        elif isawaitable(value):  # a plain function returned something to await
            conn.start(_run(conn, rule, call, expose, stats, value), rule.task_name)
            return
        reply = rule.reply(call, value)
        if reply is not None:
            conn.outbound.offer(reply)
    except Exception as exc:
        _failed(conn, rule, call, exc, expose, stats)


def _failed(
    conn: Connection,
    rule: Rule,
    call: protocol.Call,
    exc: Exception,
    expose: bool,
    stats: Stats,
) -> None:
    """Tell the client its call failed: a :class:`RuleError` as raised, anything else as
    ``handler_error`` (its text in development, an id that is also logged in production)."""
    if isinstance(exc, RuleError):
        code, message = exc.code, exc.message
        log.debug("websocket rule %r refused the call: %s %s", call.rule, code, message)
    else:
        stats.rule_errors[rule.name] += 1
        error_id = secrets.token_hex(4)
        log.error(
            "websocket rule %r (app %r) raised %s [%s]",
            call.rule,
            rule.app,
            type(exc).__name__,
            error_id,
            exc_info=exc,
        )
        code = protocol.HANDLER_ERROR
        message = f"{type(exc).__name__}: {exc}" if expose else f"internal error [{error_id}]"
    conn.outbound.offer(
        protocol.encode_error(code, message, form=call.form, rule=call.rule, id=call.id)
    )


async def _run(
    conn: Connection,
    rule: Rule,
    call: protocol.Call,
    expose: bool,
    stats: Stats,
    started: Any = _NOT_STARTED,
) -> None:
    """One call: the handler, then its reply (or its error) on the connection's path.

    ``started``: what an inline call left to await (the handler was already called).
    """
    try:
        value: Any = rule.invoke(conn, call) if started is _NOT_STARTED else started
        # async handlers (the type check first: it is the common case, and cheap);
        # a plain function answers directly.
        if type(value) is types.CoroutineType or isawaitable(value):
            value = await value
        reply = rule.reply(call, value)
        if reply is not None:
            waiter = conn.outbound.write(reply)
            if waiter is not None:
                await waiter
    except ConnectionClosed:
        pass  # the client went away mid-call; nothing to tell anyone
    except Exception as exc:
        _failed(conn, rule, call, exc, expose, stats)


def _closing_code(code: int) -> int:
    """The code to answer a client's close with.

    RFC 6455 §7.4.1: 1006 is never sent on the wire, so a client sending it
    is answered with 1002 (aiohttp accepts it; 1005 and 1015 it refuses itself).
    """
    return WSCloseCode.PROTOCOL_ERROR if code == WSCloseCode.ABNORMAL_CLOSURE else WSCloseCode.OK


async def _too_big(ws: web.WebSocketResponse, limit: int) -> None:
    await ws.close(code=WSCloseCode.MESSAGE_TOO_BIG, message=f"message over {limit} bytes".encode())


def origin_allowed(
    origin: str | None,
    host: str | None,
    allowed: Collection[str],
    same_host_ports: Collection[int] = (),
) -> bool:
    """Browsers send ``Origin``; it must be the serving host or listed. No header: not a browser.

    ``same_host_ports``: an origin on the same host name at one of these ports
    is accepted too (a page of the HTTP port talking to the websocket port).
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
    return port in same_host_ports and parts.hostname is not None and parts.hostname == host_name


def websocket_endpoint(
    dispatcher: Dispatcher,
    settings: EndpointSettings,
    hub: Hub,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler serving the websocket protocol with ``dispatcher``."""
    allowed = frozenset(o.rstrip("/") for o in settings.allowed_origins)
    limit = settings.max_message_size
    connect = settings.connect
    warn_if_hooks_missing()

    async def handle(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.host, allowed, settings.same_host_ports):
            log.warning("refused websocket from origin %r (host %r)", origin, request.host)
            raise web.HTTPForbidden(text=f"origin {origin!r} is not allowed\n")
        ws = StrictWebSocketResponse(
            heartbeat=settings.heartbeat,
            # aiohttp refuses a message of exactly max_msg_size (its check is >=);
            # the limit is what a message may be, so one more, and the loop below
            # catches a compressed message of limit + 1.
            max_msg_size=limit + 1,
            timeout=CLOSE_TIMEOUT,
            # The loop answers the client's close itself (see _closing_code).
            autoclose=False,
            protocols=(SUBPROTOCOL,),
        )
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="expected a websocket upgrade request\n")
        user = None
        if connect is not None:  # raises an HTTP error to refuse, before the upgrade
            user = connect(request)
            if isawaitable(user):
                user = await user
        try:
            await ws.prepare(request)
        except ConnectionResetError:
            # The client (or a proxy giving up on it) hung up before the 101 went out:
            # routine under load, not an error. 499 as nginx logs it; nothing is sent.
            log.debug("websocket client %s left during the handshake", request.remote)
            return web.Response(status=CLIENT_CLOSED_REQUEST, reason="Client Closed Request")
        conn = Connection(
            ws, request, send_queue=hub.send_queue, hub=hub, v2=ws.ws_protocol == SUBPROTOCOL
        )
        conn.user = user
        hub.connections.add(conn)
        stats = hub.stats
        stats.connections_opened += 1
        on_text, on_binary, receive = dispatcher.on_text, dispatcher.on_binary, ws.receive
        try:
            # receive() rather than `async for`: one coroutine less per message.
            while True:
                msg = await receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    stats.messages_in += 1
                    if len(msg.data) > limit:  # characters: at least as many bytes
                        await _too_big(ws, limit)
                        break
                    on_text(conn, msg.data)
                elif kind is WSMsgType.BINARY:
                    stats.messages_in += 1
                    if len(msg.data) > limit:
                        await _too_big(ws, limit)
                        break
                    on_binary(conn, msg.data)
                elif kind is WSMsgType.CLOSE:
                    await ws.close(code=_closing_code(msg.data), drain=False)
                    break
                elif kind is WSMsgType.ERROR:
                    log.info("websocket %s closed on error: %s", conn.id, ws.exception())
                    break
                elif kind in _ENDS:
                    break
        except Exception:  # a defect in tranzit, not the client's doing
            log.exception("websocket %s: the receive loop failed; closing with 1011", conn.id)
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, drain=False)
        finally:
            hub.forget(conn)
            await conn.cancel_tasks()
            if not ws.closed:
                await ws.close()
        return ws

    return handle
