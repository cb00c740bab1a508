"""tranzit's hooks into aiohttp's websocket internals, all in this module.

* RFC 6455 §5.1: a server MUST close on an unmasked client frame, and
  aiohttp's frame reader accepts them. :class:`MaskCheck` stands in front of
  aiohttp's reader, looks only at each frame's 2 to 14 header bytes to find
  the mask bit and the payload length, and passes every byte on unchanged. On
  an unmasked frame it fails the message queue with 1002, the way aiohttp's
  reader reports its own protocol errors, and aiohttp closes the connection.
* Corked writes: the response's writer writes to a
  :class:`~tranzit.ws.outbound.CorkedTransport`, and each chunk fed to the
  reader schedules its flush right behind the reader's turn, so the replies to
  one read leave in one write.

Both need aiohttp internals (``_post_start``, the request protocol's
``_payload_parser`` and ``_message_tail``, the writer's ``transport``). Where
an aiohttp lacks them, :func:`missing_hooks` names what is gone, the server
warns once at start-up naming the aiohttp version, and the response works
without the hook; ``tests/ws/test_strict.py`` pins every name.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError

from .outbound import CorkedTransport

__all__ = ["MaskCheck", "StrictWebSocketResponse", "missing_hooks", "warn_if_hooks_missing"]

log = logging.getLogger("tranzit.ws")

#: The private aiohttp names the hooks use (tests/ws/test_strict.py checks each one).
PRIVATE_NAMES = {
    "aiohttp.web.WebSocketResponse._post_start": "the unmasked-frame check and corked writes",
    "aiohttp.web_protocol.RequestHandler._payload_parser": "the unmasked-frame check",
    "aiohttp.web_protocol.RequestHandler._message_tail": "the unmasked-frame check",
}


class MaskCheck:
    """Feeds aiohttp's reader; fails the connection on the first unmasked frame.

    ``fed`` is called after each chunk reached the reader (the corked writer's
    flush is scheduled there).
    """

    __slots__ = ("_failed", "_fed", "_header", "_inner", "_queue", "_skip")

    def __init__(self, inner: Any, queue: Any, fed: Any = None) -> None:
        self._inner = inner
        self._queue = queue
        self._fed = fed
        self._header = b""  # the current frame's header bytes seen so far
        self._skip = 0  # payload bytes of the current frame still to pass by
        self._failed = False

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def feed_data(self, data: bytes) -> Any:
        result = self._feed(data)
        if self._fed is not None:  # after: the reader's wake-up is scheduled by now
            self._fed()
        return result

    def _feed(self, data: bytes) -> Any:
        if self._failed:
            return False, b""
        end = len(data)
        pos = 0
        if self._skip:  # the rest of a frame that began in an earlier chunk
            if self._skip >= end:
                self._skip -= end
                return self._inner.feed_data(data)
            pos, self._skip = self._skip, 0
        if self._header:  # a header split across chunks: at most 14 bytes to join
            buf = self._header + data[pos : pos + 14]
            frame_end = _frame_end(buf, 0)
            if frame_end is None:
                self._header = buf
                return self._inner.feed_data(data)
            if frame_end < 0:
                return self._fail(data, 0)
            pos += frame_end - len(self._header)
            self._header = b""
        # The common case, inlined: each frame's header lies whole in this chunk,
        # and a short masked frame (payload under 126 bytes) needs no call.
        while pos < end:
            if pos + 1 < end:
                second = data[pos + 1]
                if 0x80 <= second < 0xFE:
                    pos += (second & 0x7F) + 6
                    continue
            frame_end = _frame_end(data, pos)
            if frame_end is None:
                self._header = data[pos:]
                break
            if frame_end < 0:
                return self._fail(data, pos)
            pos = frame_end
        if pos > end:
            self._skip = pos - end
        return self._inner.feed_data(data)

    def _fail(self, data: bytes, frame_start: int) -> Any:
        """An unmasked frame at ``frame_start``: the frames before it still count."""
        self._failed = True
        if frame_start > 0:
            self._inner.feed_data(data[:frame_start])
        self._queue.set_exception(
            WebSocketError(WSCloseCode.PROTOCOL_ERROR, "client frames must be masked")
        )
        return False, b""


def _frame_end(buf: bytes, at: int) -> int | None:
    """Where the frame starting at ``buf[at]`` ends (may lie beyond ``buf``).

    None: its header is not all here yet (the length bytes are missing);
    -1: the frame is unmasked. Only the 2 to 10 bytes that give the mask bit and
    the payload length are read; the 4 mask-key bytes are passed over.
    """
    avail = len(buf) - at
    if avail < 2:
        return None
    second = buf[at + 1]
    if not second & 0x80:
        return -1
    length = second & 0x7F
    if length < 126:
        return at + 6 + length
    if length == 126:
        if avail < 4:
            return None
        return at + 8 + ((buf[at + 2] << 8) | buf[at + 3])
    if avail < 10:
        return None
    return at + 14 + int.from_bytes(buf[at + 2 : at + 10], "big")


def missing_hooks() -> list[str]:
    """The private aiohttp names this aiohttp lacks (empty: every hook works)."""
    from aiohttp import web_protocol

    missing = []
    if not hasattr(web.WebSocketResponse, "_post_start"):
        missing.append("aiohttp.web.WebSocketResponse._post_start")
    handler = web_protocol.RequestHandler
    for name in ("_payload_parser", "_message_tail"):
        if name not in getattr(handler, "__slots__", ()) and not hasattr(handler, name):
            missing.append(f"aiohttp.web_protocol.RequestHandler.{name}")
    return missing


_warned = False


def warn_if_hooks_missing() -> None:
    """Once per process: say which hooks this aiohttp cannot take."""
    global _warned
    if _warned:
        return
    _warned = True
    for name in missing_hooks():
        log.warning(
            "aiohttp %s has no %s: %s is off (tranzit is tested with aiohttp 3.14)",
            aiohttp.__version__,
            name,
            PRIVATE_NAMES[name],
        )


class StrictWebSocketResponse(web.WebSocketResponse):
    """A ``WebSocketResponse`` that closes with 1002 on unmasked client frames and corks
    its writes (one write per loop turn)."""

    #: aiohttp's writer of this response (a public class, ``aiohttp.http.WebSocketWriter``):
    #: the outbound path sends text frames with it directly, one coroutine less per frame.
    frame_writer: Any = None
    #: The corked transport under the writer (None where aiohttp's writer has no transport).
    cork: CorkedTransport | None = None

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        if callable(getattr(writer, "send_frame", None)):
            self.frame_writer = writer
        transport = getattr(writer, "transport", None)
        cork = CorkedTransport(transport) if transport is not None else None
        if cork is not None:
            writer.transport = self.cork = cork
        handler = request.protocol
        if not (hasattr(handler, "_message_tail") and hasattr(handler, "_payload_parser")):
            super()._post_start(request, protocol, writer)  # unknown aiohttp: no check
            return
        # Bytes that arrived with the handshake must go through the check too.
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        fed = cork.schedule if cork is not None else None
        checked = MaskCheck(handler._payload_parser, self._reader, fed)
        handler._payload_parser = checked
        if tail:
            eof, _ = checked.feed_data(tail)
            if eof:
                handler.close()
