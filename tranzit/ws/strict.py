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
        # The common case, inlined: each frame's header lies whole in this chunk.
        while pos < end:
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
