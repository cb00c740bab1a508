"""Websocket echo load: N connections, each keeping DEPTH messages in flight.

aiohttp's client on uvloop, compression off (not offered in the handshake).
Prints JSON lines on stdout: ``{"event": "start"}`` when the measured window
opens, ``{"event": "end"}`` when it closes, then ``{"result": {...}}``.

    python -m bench.clients.ws_echo URL --connections 50 --depth 16 --warmup 1 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from typing import Any

import aiohttp
import uvloop


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


async def drive(
    session: aiohttp.ClientSession, url: str, depth: int, payload: str, w: Window
) -> None:
    message = "echo|" + payload
    async with session.ws_connect(url, compress=0, autoping=True, max_msg_size=1 << 20) as ws:
        sent: collections.deque[float] = collections.deque()
        for _ in range(depth):
            sent.append(time.perf_counter())
            await ws.send_str(message)
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"expected a text echo, got {msg.type.name}: {msg.data!r}")
            now = time.perf_counter()
            began = sent.popleft()
            if w.start <= now < w.end:
                w.received += 1
                w.latencies.append(now - began)
                if msg.data != message:
                    w.unexpected += 1
            if now >= w.end:
                if not sent:
                    break
                continue  # drain what is still in flight, send no more
            sent.append(now)
            await ws.send_str(message)


async def window_markers(w: Window) -> None:
    await asyncio.sleep(max(0.0, w.start - time.perf_counter()))
    emit({"event": "start"})
    await asyncio.sleep(max(0.0, w.end - time.perf_counter()))
    emit({"event": "end"})


async def main(args: argparse.Namespace) -> None:
    payload = "x" * args.size
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        w = Window(args.warmup, args.duration)
        ready = asyncio.Event()

        async def one() -> None:
            await ready.wait()
            await drive(session, args.url, args.depth, payload, w)

        tasks = [asyncio.create_task(one()) for _ in range(args.connections)]
        now = time.perf_counter()
        w.start, w.end = now + args.warmup, now + args.warmup + args.duration
        ready.set()
        markers = asyncio.create_task(window_markers(w))
        await asyncio.wait_for(asyncio.gather(*tasks), args.warmup + args.duration + 30)
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
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    uvloop.run(main(args))  # asyncio.Runner(loop_factory=...) is 3.11+
