"""Websocket echo load: N connections, each keeping DEPTH messages in flight.

A load generator that stays well below one core while a server saturates its
own: every connection sends the same message and expects the same reply, so
the frames are built once (the ``websockets`` library's framing, masked as
RFC 6455 requires of clients) and the replies are checked as whole runs of
the one expected frame, many per read. Per message that is a slice
comparison and a timestamp, not a parse. Anything else the server sends
(a ping, a close, a different reply) is parsed one frame at a time.

Prints JSON lines on stdout: ``{"event": "start"}`` when the measured window
opens, ``{"event": "end"}`` when it closes, then ``{"result": {...}}``.

    python -m bench.clients.ws_echo URL --connections 50 --depth 16 --warmup 1 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import uvloop
from websockets.frames import Frame, Opcode

#: Opcodes of the frames the slow path understands.
PING, PONG, CLOSE, TEXT = 0x9, 0xA, 0x8, 0x1


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Window:
    """The measured interval, shared by all connections."""

    def __init__(self, warmup: float, duration: float) -> None:
        now = time.perf_counter()
        self.start = now + warmup
        self.end = self.start + duration
        self.received = 0
        self.unexpected = 0
        self.latencies: list[float] = []


def client_frame(opcode: Opcode, payload: bytes) -> bytes:
    return Frame(opcode, payload).serialize(mask=True)


def server_frame(payload: bytes) -> bytes:
    """The unmasked text frame a server sends for ``payload``."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class EchoClient(asyncio.Protocol):
    """One connection: handshake, then DEPTH messages in flight until the window ends."""

    def __init__(self, request: bytes, message: bytes, depth: int, w: Window) -> None:
        self.request = request
        self.frame = client_frame(Opcode.TEXT, message)
        self.expected = server_frame(message)
        self.depth = depth
        self.w = w
        self.buffer = b""
        self.upgraded = False
        self.sent: collections.deque[float] = collections.deque()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the server closed the connection"))

    def fail(self, message: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(message))
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = buffer
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.fail(f"handshake refused: {head[:200]!r}")
                return
            self.upgraded = True
            self.send(self.depth)
            buffer = rest
        self.buffer = self.receive(buffer)

    def receive(self, buffer: bytes) -> bytes:
        """Count the replies at the start of ``buffer``; return the part not yet whole."""
        expected = self.expected
        size = len(expected)
        count = len(buffer) // size
        # The common case: nothing but whole copies of the expected reply.
        if count and buffer[: count * size] == expected * count:
            pos = count * size
        else:
            pos = 0
            while buffer.startswith(expected, pos):
                pos += size
            count = pos // size
        if count:
            self.replies(count)
        rest = buffer[pos:]
        if not rest or expected.startswith(rest):
            return rest  # nothing left, or the start of the next reply
        after = self.other_frame(rest)
        if after is None:
            return b""
        if after is rest:
            return rest  # that frame is not all here yet
        return self.receive(after)

    def other_frame(self, buffer: bytes) -> bytes | None:
        """One frame that is not the expected reply: pings are answered, the rest is an error."""
        if len(buffer) < 2:
            return buffer
        opcode, length, at = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return buffer
            length, at = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            if len(buffer) < 10:
                return buffer
            length, at = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < at + length:
            return buffer
        payload, rest = buffer[at : at + length], buffer[at + length :]
        if opcode == PING:
            self.transport.write(client_frame(Opcode.PONG, payload))
            return rest
        if opcode == PONG:
            return rest
        if opcode == TEXT:
            self.w.unexpected += 1
            self.fail(f"expected the echo {self.expected[2:]!r}, got {payload[:200]!r}")
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            self.fail(f"the server closed with {code}: {payload[2:200]!r}")
        else:
            self.fail(f"unexpected frame with opcode {opcode:#x}")
        return None

    def replies(self, count: int) -> None:
        now = time.perf_counter()
        w, sent = self.w, self.sent
        if w.start <= now < w.end:
            w.received += count
            latencies = w.latencies
            for _ in range(count):
                latencies.append(now - sent.popleft())
        else:
            for _ in range(count):
                sent.popleft()
        if now < w.end:
            self.send(count)
        elif not sent and not self.done.done():
            self.done.set_result(None)  # drained what was in flight; no more sends

    def send(self, count: int) -> None:
        now = time.perf_counter()
        self.sent.extend([now] * count)
        self.transport.write(self.frame * count)


def upgrade_request(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    return host, port, request.encode()


async def window_markers(w: Window) -> None:
    await asyncio.sleep(max(0.0, w.start - time.perf_counter()))
    emit({"event": "start"})
    await asyncio.sleep(max(0.0, w.end - time.perf_counter()))
    emit({"event": "end"})


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    message = f"{args.rule}|{'x' * args.size}".encode()
    host, port, request = upgrade_request(args.url)
    w = Window(args.warmup, args.duration)
    clients: list[EchoClient] = []
    for _ in range(args.connections):
        client = EchoClient(request, message, args.depth, w)
        await loop.create_connection(lambda c=client: c, host, port)  # type: ignore[misc]
        clients.append(client)
    now = time.perf_counter()
    w.start, w.end = now + args.warmup, now + args.warmup + args.duration
    markers = asyncio.create_task(window_markers(w))
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.done for c in clients)), args.warmup + args.duration + 30
        )
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    await markers
    lat = sorted(w.latencies)
    emit(
        {
            "result": {
                "messages": w.received,
                "rate": w.received / args.duration,
                "unexpected": w.unexpected,
                "latency_ms": {p: 1000 * _pct(lat, p) for p in ("50", "90", "99")},
            }
        }
    )


def _pct(values: list[float], p: str) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * float(p) / 100))]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="payload characters")
    parser.add_argument("--rule", default="echo", help="the message is RULE|<payload>")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    uvloop.run(main(args))  # asyncio.Runner(loop_factory=...) is 3.11+
