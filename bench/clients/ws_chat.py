"""Broadcast across ws replicas: clients of a group, through nginx.

The rules are the bench's (``BENCH_RULES`` in bench/workloads/scale.py, added
to the generated project): ``bench_join|<room>`` joins the group quietly (the
template's chat ``join`` tells every member, which is N² messages for N
joins), ``bench_say|<room>,<text>`` is ``conn.hub.send_group`` of
``chat|<room>,speaker,<text>``. One process holds many connections (the
harness starts several). Each connection joins and waits for the reply, which
names the replica that holds it. JSON lines out, commands in on stdin:

* ``{"event": "joined", "hosts": {replica: count}, "seconds": s}`` once every
  connection has joined;
* ``{"event": "warm"}`` once every connection heard a ``warm`` message;
* ``{"event": "complete"}`` once every connection heard all ``lat`` and
  ``thr`` messages (``--rounds`` + ``--burst``);
* on the line ``stop``: ``{"result": {...}}`` and exit.

With ``--speaker`` the process holds one connection that says things instead:
``warm`` on the line ``warm`` (every 0.3 s until the next command), then on
``go``: ``--rounds`` latency messages ``lat <k> <epoch>`` ``--pause`` apart
and (after ``{"event": "bursting"}``) a burst of ``--burst`` messages
``thr <k> <epoch>`` back to back, then ``{"event": "said", "burst_began": epoch}``.
Latency is receive time minus the epoch in the text: every process runs on this machine's clock.

    python -m bench.clients.ws_chat URL --connections 2000 --rounds 10 --burst 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import uvloop

from ..proc import raise_nofile

ROOM = "bench"


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit("ws_chat: the harness closed stdin")
    return line.strip()


class Listener:
    def __init__(self, expected: int, count: int) -> None:
        self.expected = expected
        self.count = count
        self.heard_warm: set[int] = set()
        self.got = [0] * count
        self.latency: list[float] = []  # seconds, "lat" messages
        self.burst: list[float] = []  # receive epochs of "thr" messages
        self.warm = asyncio.Event()
        self.complete = asyncio.Event()
        self.done = 0

    def hear(self, index: int, text: str) -> None:
        now = time.time()
        # chat|<room>,<speaker>,<text>
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[1] != "speaker":
            return
        kind, _, rest = parts[2].partition(" ")
        if kind == "warm":
            self.heard_warm.add(index)
            if len(self.heard_warm) == self.count:
                self.warm.set()
            return
        sent = float(rest.rsplit(" ", 1)[1])
        if kind == "lat":
            self.latency.append(now - sent)
        elif kind == "thr":
            self.burst.append(now)
        else:
            return
        self.got[index] += 1
        if self.got[index] == self.expected:
            self.done += 1
            if self.done == self.count:
                self.complete.set()


async def reader(ws: aiohttp.ClientWebSocketResponse, index: int, listener: Listener) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT and msg.data.startswith("chat|"):
            listener.hear(index, msg.data)


async def join(
    session: aiohttp.ClientSession, url: str, name: str, timeout: float
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await session.ws_connect(
        url, heartbeat=None, compress=0, timeout=aiohttp.ClientWSTimeout(ws_close=1.0)
    )
    await ws.send_str(f"bench_join|{ROOM}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"{name}: connection ended while joining: {msg.type!r}")
        if msg.data.startswith(f"bench_join|{ROOM},"):
            return ws, msg.data.split(",")[2]
    raise RuntimeError(f"{name}: no join reply within {timeout:.0f} s")


async def listen(args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
    listener = Listener(args.rounds + args.burst, args.connections)
    slots = asyncio.Semaphore(args.concurrency)
    hosts: Counter[str] = Counter()
    tasks: list[asyncio.Task[None]] = []
    began = time.monotonic()

    async def one(i: int) -> None:
        async with slots:
            ws, host = await join(session, args.url, f"{args.prefix}{i}", args.timeout)
        hosts[host] += 1
        tasks.append(asyncio.create_task(reader(ws, i, listener)))

    await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(args.connections))), args.connect_timeout
    )
    emit({"event": "joined", "hosts": dict(hosts), "seconds": time.monotonic() - began})
    await asyncio.wait_for(listener.warm.wait(), args.timeout * 4)
    emit({"event": "warm"})
    try:
        await asyncio.wait_for(listener.complete.wait(), args.timeout * 4)
        emit({"event": "complete"})
    except asyncio.TimeoutError:
        emit({"event": "complete", "incomplete": True})
    if await command() != "stop":
        raise SystemExit("ws_chat: expected 'stop'")
    burst = sorted(listener.burst)
    emit(
        {
            "result": {
                "connections": args.connections,
                "hosts": dict(hosts),
                "latency_s": listener.latency,
                "burst_received": len(burst),
                "burst_first": burst[0] if burst else None,
                "burst_last": burst[-1] if burst else None,
                "missing": sum(args.rounds + args.burst - g for g in listener.got),
                "closed": sum(t.done() for t in tasks),
            }
        }
    )


async def speak(args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
    ws, host = await join(session, args.url, "speaker", args.timeout)
    emit({"event": "joined", "hosts": {host: 1}, "seconds": 0.0})

    async def drain() -> None:
        async for _ in ws:
            pass

    drainer = asyncio.create_task(drain())
    if await command() != "warm":
        raise SystemExit("ws_chat: expected 'warm'")
    go = asyncio.create_task(command())
    for n in range(int(args.timeout * 20)):  # bounded: until the harness says go
        await ws.send_str(f"bench_say|{ROOM},warm {n}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(go), 0.3)
            break
    if not go.done() or go.result() != "go":
        raise SystemExit("ws_chat: expected 'go'")
    await asyncio.sleep(1.0)  # the last warm-ups pass by
    for k in range(args.rounds):
        await ws.send_str(f"bench_say|{ROOM},lat {k} {time.time():.6f}")
        await asyncio.sleep(args.pause)
    emit({"event": "bursting"})
    began = time.time()
    for k in range(args.burst):
        await ws.send_str(f"bench_say|{ROOM},thr {k} {time.time():.6f}")
    emit({"event": "said", "burst_began": began})
    await command()  # "stop"
    drainer.cancel()
    emit({"result": {"speaker": True}})


async def main(args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        if args.speaker:
            await speak(args, session)
        else:
            await listen(args, session)
    # No close handshakes for thousands of sockets: the harness takes the stack down next.
    os._exit(0)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--speaker", action="store_true")
    parser.add_argument("--prefix", default="c", help="names are <prefix><index>")
    parser.add_argument("--rounds", type=int, default=10, help="latency messages")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between them")
    parser.add_argument("--burst", type=int, default=50, help="messages back to back")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes at a time")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--connect-timeout", type=float, default=300.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse()
    raise_nofile(options.connections + 256)
    uvloop.run(main(options))  # asyncio.Runner(loop_factory=...) is 3.11+
