"""Fan-out: N idle websocket connections, then broadcasts timed at every receiver.

Talks to the harness over stdin/stdout (JSON lines out, one "go" line in):

1. one warm-up connection (echo round trip, closed), then ``{"event": "baseline"}``;
   waits for "go" (the harness reads the server's RSS);
2. opens N connections, ``{"event": "connected"}``; waits for "go";
3. BROADCASTS times: a trigger connection sends ``broadcast|<k>``; the latency of
   a receiver is the time from that send to its ``b|<k>``; the server answers the
   trigger ``broadcast|<seconds its loop took>``; prints ``{"result": ...}``.

    python -m bench.clients.ws_fanout URL --connections 1000 --broadcasts 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp
import uvloop


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def wait_go() -> None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(f"ws_fanout: expected 'go' from the harness, got {line!r}")


class Round:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.times: list[float] = []
        self.done = asyncio.Event()


async def receiver(ws: aiohttp.ClientWebSocketResponse, state: dict[str, Round]) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT and msg.data.startswith("b|"):
            current = state["round"]
            current.times.append(time.perf_counter())
            if len(current.times) >= current.expected:
                current.done.set()


async def main(args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientWSTimeout(ws_close=1.0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.ws_connect(args.url, compress=0, timeout=timeout) as warm:
            await warm.send_str("echo|warm")
            await warm.receive(timeout=10)
        emit({"event": "baseline"})
        await wait_go()

        state = {"round": Round(args.connections)}
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        readers: list[asyncio.Task[None]] = []
        slots = asyncio.Semaphore(args.concurrency)
        began = time.perf_counter()

        async def connect() -> None:
            async with slots:
                ws = await session.ws_connect(args.url, compress=0, timeout=timeout)
            sockets.append(ws)
            readers.append(asyncio.create_task(receiver(ws, state)))

        await asyncio.wait_for(
            asyncio.gather(*(connect() for _ in range(args.connections))), args.connect_timeout
        )
        connect_s = time.perf_counter() - began
        emit({"event": "connected", "seconds": connect_s})
        await wait_go()

        rounds = []
        async with session.ws_connect(args.url, compress=0, timeout=timeout) as trigger:
            for k in range(args.broadcasts):
                current = state["round"] = Round(args.connections)
                t0 = time.perf_counter()
                await trigger.send_str(f"broadcast|{k}")
                await asyncio.wait_for(current.done.wait(), args.round_timeout)
                server_s = None
                for _ in range(3):  # its own b|k, then the loop time
                    msg = await trigger.receive(timeout=args.round_timeout)
                    if msg.type == aiohttp.WSMsgType.TEXT and msg.data.startswith("broadcast|"):
                        server_s = float(msg.data.split("|", 1)[1])
                        break
                lat = sorted(t - t0 for t in current.times)
                rounds.append(
                    {
                        "p50_ms": 1000 * lat[len(lat) // 2],
                        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                        "max_ms": 1000 * lat[-1],
                        "server_loop_ms": None if server_s is None else 1000 * server_s,
                    }
                )
                await asyncio.sleep(args.pause)
        emit({"result": {"connect_seconds": connect_s, "rounds": rounds}})
        # No N close handshakes: the harness stops the server next; exit drops the sockets.
        os._exit(0)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes at a time")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between broadcasts")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--round-timeout", type=float, default=30.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    uvloop.run(main(args))  # asyncio.Runner(loop_factory=...) is 3.11+
