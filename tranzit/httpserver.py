"""The HTTP server under the apps: request timeouts, descriptor exhaustion, client-error logs.

aiohttp closes idle keep-alive connections (``keepalive_timeout``) but has no
bound for a client that sends half a request. :class:`AppRunner` serves with
:class:`TimedRequestHandler`, which adds nginx's two read timeouts:

* ``header_timeout``: from a request's first byte (a new connection's start)
  to the end of its headers; then the connection is closed;
* ``body_timeout``: the longest pause between two reads of a request body;
  then reading the body raises 408 and the connection closes after the reply.

A websocket, once upgraded, has neither (its heartbeat bounds it). Both hooks
use private aiohttp names (:data:`PRIVATE_NAMES`, pinned by
``tests/test_http_edge.py``); where one is gone the runner serves with plain
aiohttp and says so once at start-up.

The runner also logs, at most every 10 s, when the process runs out of file
descriptors (aiohttp's asyncio loop logs each failed accept with a traceback,
uvloop logs nothing), and demotes aiohttp's tracebacks for errors a client
causes (malformed requests, abandoned uploads) to one debug line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
from typing import Any

import aiohttp
from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from .throttle import Throttle

__all__ = [
    "PRIVATE_NAMES",
    "AppRunner",
    "ClientErrorFilter",
    "DescriptorWatch",
    "TimedRequestHandler",
    "missing_hooks",
]

log = logging.getLogger("tranzit.http")

#: The private aiohttp names the timeouts use (``tests/test_http_edge.py`` checks each one).
PRIVATE_NAMES = {
    "aiohttp.web_runner.AppRunner._make_server": "the header and body timeouts",
    "aiohttp.web_server.Server._kwargs": "the header and body timeouts",
    "aiohttp.web_protocol.RequestHandler._request_count": "the header and body timeouts",
    "aiohttp.web_protocol.RequestHandler._messages": "the body timeout",
    "aiohttp.web_protocol.RequestHandler._current_request": "the body timeout",
    "aiohttp.base_protocol.BaseProtocol._reading_paused": "the body timeout",
    "aiohttp.base_protocol.BaseProtocol._loop": "the header and body timeouts",
    "aiohttp.base_protocol.BaseProtocol._upgraded": "the header and body timeouts",
}

_HANDLER_SLOTS = ("_request_count", "_messages", "_current_request")

#: Errors of the client's making: logged at debug, in one line.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    HttpProcessingError,  # malformed request line, headers, chunking, lengths
    web.RequestPayloadError,  # a body that ended early or was malformed
    aiohttp.ClientPayloadError,
    ConnectionResetError,  # the client went away mid-request
    asyncio.TimeoutError,
)


def missing_hooks() -> list[str]:
    """The private aiohttp names this aiohttp lacks (empty: every timeout works)."""
    from aiohttp import base_protocol

    missing = []
    if "_make_server" not in vars(web.AppRunner):
        missing.append("aiohttp.web_runner.AppRunner._make_server")
    if "_kwargs" not in web.Server.__init__.__code__.co_names:
        missing.append("aiohttp.web_server.Server._kwargs")
    handler = web_protocol.RequestHandler
    for name in _HANDLER_SLOTS:
        if name not in handler.__slots__:
            missing.append(f"aiohttp.web_protocol.RequestHandler.{name}")
    for name in ("_reading_paused", "_loop", "_upgraded"):
        if name not in base_protocol.BaseProtocol.__slots__:
            missing.append(f"aiohttp.base_protocol.BaseProtocol.{name}")
    return missing


# Phases of a connection the timer watches.
_IDLE = 0  # handling a request, idle between requests (aiohttp's keep-alive), or upgraded
_HEADERS = 1  # waiting for the end of a request's headers
_BODY = 2  # a request body is still arriving


class TimedRequestHandler(web_protocol.RequestHandler):
    """aiohttp's request handler with a header timeout and a body timeout.

    One timer per connection, re-armed only when its deadline moved (the way
    aiohttp's keep-alive timer works): a request whose headers arrive in one
    read, the common case, costs no timer at all.
    """

    __slots__ = (
        "_body",
        "_body_timeout",
        "_deadline",
        "_header_timeout",
        "_last_read",
        "_phase",
        "_timer",
        "_watch",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        body_timeout: float,
        watch: DescriptorWatch | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._watch = watch
        self._phase = _IDLE
        self._deadline = 0.0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._body: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._watch is not None:
            self._watch.opened()
        self._wait_for_headers()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._watch is not None:
            self._watch.closed()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase, self._body = _IDLE, None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._upgraded:  # a websocket: its heartbeat bounds it
            super().data_received(data)
            return
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # the headers of a request are complete
            messages = self._messages
            payload = messages[-1][1] if messages else None
            if payload is None or payload.is_eof() or self._upgraded:
                self._phase, self._body = _IDLE, None
            else:
                self._phase, self._body = _BODY, payload
                self._last_read = self._loop.time()
                self._arm(self._last_read + self._body_timeout)
        elif self._phase == _BODY:
            if self._body.is_eof():
                self._phase, self._body = _IDLE, None
            else:
                self._last_read = self._loop.time()
        elif self._phase == _IDLE and data:  # the first bytes of a later request
            self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        self._phase = _HEADERS
        self._arm(self._loop.time() + self._header_timeout)

    def _arm(self, deadline: float) -> None:
        self._deadline = deadline
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)
        elif self._timer.when() > deadline:
            self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._phase == _IDLE or self.transport is None or self._upgraded:
            return
        now = self._loop.time()
        if self._phase == _BODY:
            body = self._body
            if body.is_eof() or body.exception() is not None or self._current_request is None:
                self._phase, self._body = _IDLE, None  # done, or the handler stopped reading
                return
            if self._reading_paused:  # the handler is not reading: not the client's pause
                self._last_read = now
            self._deadline = self._last_read + self._body_timeout
        if now < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        if self._phase == _HEADERS:
            log.debug(
                "%s: no complete request headers within %g s; connection closed",
                _peer(self),
                self._header_timeout,
            )
            self.force_close()
            return
        log.debug(
            "%s: request body paused for over %g s; request failed with 408",
            _peer(self),
            self._body_timeout,
        )
        self._phase, body, self._body = _IDLE, self._body, None
        body.set_exception(web.HTTPRequestTimeout(text="request body timed out\n"))
        body.feed_eof()  # no lingering read of a body that stopped
        self.close()


def _peer(handler: web_protocol.RequestHandler) -> str:
    peer = handler.peername
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "client")


class _TimedServer(web.Server):
    """aiohttp's low-level server, making :class:`TimedRequestHandler` protocols."""

    def __init__(self, inner: web.Server, kwargs: dict[str, Any], **timeouts: Any) -> None:
        self._timeouts = timeouts
        self._handler_kwargs = kwargs
        self._event_loop = asyncio.get_running_loop()
        super().__init__(
            inner.request_handler,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            loop=self._event_loop,
            **kwargs,
        )

    def __call__(self) -> TimedRequestHandler:
        return TimedRequestHandler(
            self, loop=self._event_loop, **self._timeouts, **self._handler_kwargs
        )


class AppRunner(web.AppRunner):
    """``web.AppRunner`` with the header and body timeouts, the descriptor watch and
    the client-error log filter. ``keepalive_timeout`` and the rest go to aiohttp."""

    __slots__ = ("_timeouts",)

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        body_timeout: float,
        keepalive_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, keepalive_timeout=keepalive_timeout, **kwargs)
        self._timeouts = {"header_timeout": header_timeout, "body_timeout": body_timeout}

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        install_logging_hooks(asyncio.get_running_loop())
        kwargs = getattr(server, "_kwargs", None)
        if _warn_if_hooks_missing() or not isinstance(kwargs, dict):
            return server
        return _TimedServer(server, kwargs, watch=_WATCH, **self._timeouts)


_warned_hooks = False


def _warn_if_hooks_missing() -> bool:
    """Whether a hook is missing; the first time, say which."""
    global _warned_hooks
    missing = missing_hooks()
    if missing and not _warned_hooks:
        _warned_hooks = True
        for name in missing:
            log.warning(
                "aiohttp %s has no %s: %s are off (tranzit is tested with aiohttp 3.14)",
                aiohttp.__version__,
                name,
                PRIVATE_NAMES[name],
            )
    return bool(missing)


class DescriptorWatch:
    """Says, at most every ``interval`` seconds, that the file descriptors ran out.

    uvloop (libuv) refuses connections at the limit without a word, and asyncio
    logs every failed accept with a traceback: the connections counted here,
    checked against the limit only when they come near it, catch the first, the
    loop's exception handler the second.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.connections = 0
        self._warnings = Throttle(interval)
        self._limit = 0
        self._check_from = 0

    def _configure(self) -> None:
        self._limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self._limit == resource.RLIM_INFINITY or self._limit <= 0:
            self._check_from = 2**62
            return
        in_use = count_descriptors() or 0
        # Exact counts only once the connections could use up the last tenth.
        self._check_from = max(1, int((self._limit - in_use) * 0.9))

    def opened(self) -> None:
        self.connections += 1
        if self.connections >= self._check_from:
            self.check()

    def closed(self) -> None:
        self.connections -= 1

    def check(self) -> None:
        """Warn when (nearly) every descriptor is in use."""
        if not self._limit:
            self._configure()
        in_use = count_descriptors()
        if in_use is None or in_use >= self._limit - 2:
            self.warn(in_use)

    def warn(self, in_use: int | None = None) -> None:
        if not self._warnings.due():
            return
        if not self._limit:
            self._configure()
        if in_use is None:
            in_use = count_descriptors()
        log.warning(
            "out of file descriptors: %s of %d open; new connections are refused at the "
            "limit until some close (raise it: ulimit -n, nofile)",
            self._limit if in_use is None else in_use,
            self._limit,
        )

    def exception_handler(self, previous: Any) -> Any:
        """A loop exception handler that turns failed accepts into :meth:`warn`."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
                self.warn()
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        handle.tranzit_descriptors = True  # type: ignore[attr-defined]
        return handle


def count_descriptors() -> int | None:
    """Open file descriptors of this process; None when that takes one more than it has."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own
    except OSError:
        return None


_WATCH = DescriptorWatch()


class ClientErrorFilter(logging.Filter):
    """Turns aiohttp's traceback for an error of the client's making into one debug line.

    Handler errors (anything else) keep their level and traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, CLIENT_ERRORS):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        detail = " ".join(str(exc).split()) or "no detail"
        record.msg = f"{record.getMessage()}: {type(exc).__name__}: {detail}"
        record.args = ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_FILTER = ClientErrorFilter()


def install_logging_hooks(loop: asyncio.AbstractEventLoop) -> None:
    """The client-error filter on aiohttp's server logger, the descriptor warning on ``loop``."""
    server_log = logging.getLogger("aiohttp.server")
    if _FILTER not in server_log.filters:
        server_log.addFilter(_FILTER)
    previous = loop.get_exception_handler()
    if not getattr(previous, "tranzit_descriptors", False):
        loop.set_exception_handler(_WATCH.exception_handler(previous))
    if not _WATCH._limit:
        _WATCH._configure()
