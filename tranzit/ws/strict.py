"""RFC 6455 §5.1 on top of aiohttp: a server MUST close on an unmasked client frame.

aiohttp's frame reader accepts unmasked frames from clients. This module does
not parse frames itself: :class:`MaskCheck` stands in front of aiohttp's
reader, looks only at each frame's 2 to 14 header bytes to find the mask bit and
the payload length, and passes every byte on unchanged. On an unmasked frame
it fails the message queue with 1002, the way aiohttp's reader reports its own
protocol errors, and aiohttp closes the connection.

It hooks into aiohttp internals (``_post_start``, ``_payload_parser``,
``_message_tail``); where a future aiohttp lacks them, the check is skipped
(and ``tests/ws/test_rawsocket.py`` says so by failing).
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError

__all__ = ["MaskCheck", "StrictWebSocketResponse"]


class MaskCheck:
    """Feeds aiohttp's reader; fails the connection on the first unmasked frame."""

    __slots__ = ("_failed", "_header", "_inner", "_queue", "_skip")

    def __init__(self, inner: Any, queue: Any) -> None:
        self._inner = inner
        self._queue = queue
        self._header = b""  # the current frame's header bytes seen so far
        self._skip = 0  # payload bytes of the current frame still to pass by
        self._failed = False

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def feed_data(self, data: bytes) -> Any:
        if self._failed:
            return False, b""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            header_start = pos - len(self._header)  # negative: began in an earlier chunk
            wanted = _header_size(self._header) or 2
            take = min(wanted - len(self._header), end - pos)
            self._header += data[pos : pos + take]
            pos += take
            size = _header_size(self._header)
            if size is None or len(self._header) < size:
                continue
            if not self._header[1] & 0x80:
                self._failed = True
                if header_start > 0:  # the frames before this one are fine
                    self._inner.feed_data(data[:header_start])
                self._queue.set_exception(
                    WebSocketError(WSCloseCode.PROTOCOL_ERROR, "client frames must be masked")
                )
                return False, b""
            self._skip = _payload_size(self._header)
            self._header = b""
        return self._inner.feed_data(data)


def _header_size(header: bytes) -> int | None:
    if len(header) < 2:
        return None
    length = header[1] & 0x7F
    extra = 2 if length == 126 else 8 if length == 127 else 0
    return 2 + extra + (4 if header[1] & 0x80 else 0)


def _payload_size(header: bytes) -> int:
    length = header[1] & 0x7F
    if length == 126:
        return int.from_bytes(header[2:4], "big")
    if length == 127:
        return int.from_bytes(header[2:10], "big")
    return length


class StrictWebSocketResponse(web.WebSocketResponse):
    """A ``WebSocketResponse`` that closes with 1002 on unmasked client frames."""

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        handler = request.protocol
        if not (hasattr(handler, "_message_tail") and hasattr(handler, "_payload_parser")):
            super()._post_start(request, protocol, writer)  # unknown aiohttp: no check
            return
        # Bytes that arrived with the handshake must go through the check too.
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        checked = MaskCheck(handler._payload_parser, self._reader)
        handler._payload_parser = checked
        if tail:
            eof, _ = checked.feed_data(tail)
            if eof:
                handler.close()
