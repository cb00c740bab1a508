"""Protocol v2 members that come back after their replica goes, and the publisher they hear.

``python -m bench.clients.ws_recovery members PORTS --connections N --first K --groups G``
    N members (global indexes K..K+N-1); member i connects to ``PORTS[i % len]``
    with the subprotocol ``tranzit.2``, joins group ``g<i % G>`` with ``--rule``
    (``join|g7``) and records the number of every ``msg`` frame (``m|<n>``).
    When its connection ends it waits a random delay (up to ``--drain-jitter``
    after a 1001 ``reconnect``, up to ``--jitter`` otherwise), connects to one of
    the other ports and sends ``tz.resume`` with its last position and ticket,
    as tz.js does. Prints ``{"event": "joined"}`` once all joined, then answers
    stdin lines: ``pending`` (members disconnected or not yet recovered),
    ``check <json>`` (the publisher's acknowledgements: gaps, duplicates, order),
    ``report`` (every reconnect), ``quit``.

``python -m bench.clients.ws_recovery publisher PORT --groups G --rate R``
    Calls ``say|g<n % G>,<n>`` R times a second on one connection; stdin:
    ``use <port>`` (move to another replica), ``pause`` (stop, wait for the
    replies, print them), ``resume``, ``quit``.

Times are ``time.monotonic()`` (system-wide on Linux: the harness compares them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import uvloop

PROTOCOL = "tranzit.2"
#: Seconds a member keeps trying to reconnect, a handshake may take, and a reply.
RECONNECT_FOR = 60.0
HANDSHAKE_TIMEOUT = 10.0
REPLY_TIMEOUT = 30.0
#: What a failed connect or a send to a closing connection raises.
FAILURES = (aiohttp.ClientError, OSError, RuntimeError, asyncio.TimeoutError)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def lines() -> Any:
    """The harness's stdin, one line at a time (EOF: "quit")."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        yield line.strip() or "quit"
        if not line:
            return


class Member:
    """One client: where it is, what it heard, and each time it came back."""

    __slots__ = (
        "down", "epoch", "group", "index", "keys", "offset", "port", "reconnects", "seqs",
        "ticket",
    )  # fmt: skip

    def __init__(self, index: int, group: str, port: int) -> None:
        self.index, self.group, self.port = index, group, port
        self.seqs: list[int] = []
        #: Each positioned message's offset as (ms, seq): the order the server promises.
        self.keys: list[tuple[int, int]] = []
        self.epoch = self.offset = self.ticket = ""
        #: Disconnected, or back but not yet sent its recovery frame.
        self.down = False
        #: [closed at, close code, reason, open at, recovery at, recovered, replayed,
        #:  msgs before the recovery frame, resume result, attempts]
        self.reconnects: list[list[Any]] = []

    def position(self) -> dict[str, Any]:
        return {self.group: {"epoch": self.epoch, "offset": self.offset, "ticket": self.ticket}}


async def connect(session: aiohttp.ClientSession, port: int) -> aiohttp.ClientWebSocketResponse:
    timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)
    # A replica that stops listening with connections still in its accept queue leaves
    # their handshakes unanswered: bounded, like a browser's.
    ws = await asyncio.wait_for(
        session.ws_connect(
            f"ws://127.0.0.1:{port}/", protocols=[PROTOCOL], compress=0, heartbeat=None,
            autoping=True, timeout=timeout,
        ),
        HANDSHAKE_TIMEOUT,
    )  # fmt: skip
    if ws.protocol != PROTOCOL:
        await ws.close()
        raise RuntimeError(f"expected subprotocol {PROTOCOL}, the server chose {ws.protocol!r}")
    return ws


async def listen(m: Member, ws: aiohttp.ClientWebSocketResponse, record: list[Any] | None) -> Any:
    """Read until the connection ends; returns (close code, reason).

    ``record``: the reconnect being made (its recovery frame, replayed count and
    resume result are filled in as they arrive).
    """
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            text = msg.data
            if text.startswith('{"tz":"msg"'):
                frame = json.loads(text)
                m.seqs.append(int(frame["data"][2:]))
                m.epoch, m.offset = frame["epoch"], frame["offset"]
                ms, _, seq = m.offset.partition("-")
                m.keys.append((int(ms), int(seq)))
                if record is not None and record[4] is None:
                    record[7] += 1
            elif text.startswith('{"tz":'):
                frame = json.loads(text)
                if frame["tz"] in ("joined", "recovery") and "ticket" in frame:
                    m.epoch, m.offset, m.ticket = frame["epoch"], frame["offset"], frame["ticket"]
                if frame["tz"] == "recovery" and record is not None:
                    record[4], record[5] = time.monotonic(), frame["recovered"]
                    record[6] = frame["replayed"]
                    m.down = False
            elif text.startswith('{"id":'):
                if record is not None:
                    record[8] = json.loads(text).get("result", text)
            elif text.startswith("m|"):  # no position: a pre-16 replica
                m.seqs.append(int(text[2:]))
        elif msg.type is aiohttp.WSMsgType.CLOSE:
            return msg.data, msg.extra
        elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            return ws.close_code, ""
        elif msg.type is aiohttp.WSMsgType.ERROR:
            return 1006, str(msg.data)


async def join(
    session: aiohttp.ClientSession, m: Member, rule: str
) -> aiohttp.ClientWebSocketResponse:
    """Connect and join; returns once the joined frame (the first position and ticket) came."""
    ws = await connect(session, m.port)
    await ws.send_str(f"{rule}|{m.group}")
    while not m.ticket:
        msg = await asyncio.wait_for(ws.receive(), REPLY_TIMEOUT)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"member {m.index}: closed before joining: {msg}")
        if msg.data.startswith('{"tz":"joined"'):
            frame = json.loads(msg.data)
            m.epoch, m.offset, m.ticket = frame["epoch"], frame["offset"], frame["ticket"]
    return ws


async def stay(
    session: aiohttp.ClientSession, m: Member, ws: aiohttp.ClientWebSocketResponse,
    ports: list[int], args: argparse.Namespace,
) -> None:  # fmt: skip
    """Listen; each time the connection ends, come back elsewhere and resume."""
    record: list[Any] | None = None
    while True:
        code, reason = await listen(m, ws, record)
        closed = time.monotonic()
        m.down = True
        if not args.reconnect:
            return
        drained = code == 1001 and reason == "reconnect"
        await asyncio.sleep(random.random() * (args.drain_jitter if drained else args.jitter))
        others = [p for p in ports if p != m.port] or ports
        attempts = 0
        while True:
            attempts += 1
            port = random.choice(others)
            try:
                ws = await connect(session, port)
                break
            except FAILURES:
                if time.monotonic() - closed > RECONNECT_FOR:
                    raise
                await asyncio.sleep(0.2 + random.random() * 0.3)
        m.port = port
        record = [closed, code, reason, time.monotonic(), None, None, 0, 0, None, attempts]
        m.reconnects.append(record)
        call = {"rule": "tz.resume", "args": [m.position()], "id": len(m.reconnects)}
        # Closed at once (a replica that began draining): listen() sees it, and round again.
        with contextlib.suppress(*FAILURES):
            await ws.send_str(json.dumps(call))


def check(members: list[Member], acks: dict[str, list[int]], groups: int) -> dict[str, Any]:
    """Each member against the acknowledged messages of its group: all, once, in order.

    ``acks["ok"]``: delivered to every replica; ``acks["maybe"]``: the publisher
    cannot tell (refused, or its connection ended first): may arrive, or not.
    """
    ok: dict[str, set[int]] = {}
    maybe: dict[str, set[int]] = {}
    for n in acks["ok"]:
        ok.setdefault(f"g{n % groups}", set()).add(n)
    for n in acks["maybe"]:
        maybe.setdefault(f"g{n % groups}", set()).add(n)
    totals = Counter[str]()
    examples = []
    for m in members:
        # Told of a gap (recovered false), or no recovery frame yet: missing is expected.
        told = any(r[5] is not True for r in m.reconnects)
        totals["told_of_gap"] += told
        got = m.seqs
        seen = set(got)
        want = ok.get(m.group, set())
        missing = want - seen
        dups = len(got) - len(seen)
        # Order is the stream's (offsets), not the publisher's numbers: its calls overlap.
        disorder = sum(1 for a, b in itertools.pairwise(m.keys) if b <= a)
        extra = seen - want - maybe.get(m.group, set())
        totals["missing"] += len(missing)
        totals["duplicates"] += dups
        totals["out_of_order"] += disorder
        totals["unexpected"] += len(extra)
        totals["received"] += len(got)
        bad = bool(missing or dups or disorder or extra)
        totals["complete"] += not bad
        if not told:
            totals["always_recovered"] += 1
            totals["always_recovered_complete"] += not bad
            totals["always_recovered_missing"] += len(missing)
            totals["always_recovered_duplicates"] += dups
        # Examples: first the members that were never told of a gap (those are defects).
        if bad and len(examples) < (5 if not told else 2):
            examples.append({
                "told_of_gap": told,
                "index": m.index, "group": m.group, "missing": sorted(missing)[:10],
                "duplicated": sorted(n for n, c in Counter(got).items() if c > 1)[:10],
                "unexpected": sorted(extra)[:10], "reconnects": m.reconnects[-3:],
            })  # fmt: skip
    return {"event": "checked", "members": len(members), **totals, "examples": examples}


async def run_members(args: argparse.Namespace) -> None:
    ports = [int(p) for p in args.ports.split(",")]
    members = [
        Member(i, f"g{i % args.groups}", ports[i % len(ports)])
        for i in range(args.first, args.first + args.connections)
    ]
    joined = asyncio.Semaphore(0)
    slots = asyncio.Semaphore(args.concurrency)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(m: Member) -> None:
            async with slots:  # the first connects only: reconnects are spread by their jitter
                ws = await join(session, m, args.rule)
            joined.release()
            await stay(session, m, ws, ports, args)

        tasks = [asyncio.ensure_future(one(m)) for m in members]
        began = time.monotonic()
        for _ in members:
            await asyncio.wait_for(joined.acquire(), args.connect_timeout)
        emit({"event": "joined", "seconds": time.monotonic() - began})
        async for line in lines():
            command, _, rest = line.partition(" ")
            if command == "pending":
                emit({"event": "pending", "down": sum(m.down for m in members)})
            elif command == "check":
                emit(check(members, json.loads(rest), args.groups))
            elif command == "report":
                failed = [t for t in tasks if t.done() and t.exception() is not None]
                emit({
                    "event": "report",
                    "reconnects": [[m.index, *r] for m in members for r in m.reconnects],
                    "failed": len(failed),
                    "errors": Counter(repr(t.exception())[:120] for t in failed),
                })  # fmt: skip
            elif command == "quit":
                break
    # No close handshakes for thousands of sockets: the harness stops the servers next.
    os._exit(0)


async def run_publisher(args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    ok: list[int] = []
    maybe: list[int] = []
    errors: Counter[str] = Counter()
    waiting: dict[int, set[int]] = {}  # connection id → seqs said, no reply yet
    running = asyncio.Event()  # set by "resume", cleared by "pause"
    background: set[asyncio.Future[None]] = set()
    async with aiohttp.ClientSession(connector=connector) as session:
        current: list[Any] = [None]

        async def replies(ws: aiohttp.ClientWebSocketResponse, pending: set[int]) -> None:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                status, _, rest = msg.data.removeprefix("say|").partition(",")
                if status in ("ok", "unavailable"):
                    seq = int(rest.split(",")[0])
                    pending.discard(seq)
                    (ok if status == "ok" else maybe).append(seq)
                    errors[status] += status != "ok"
                else:
                    errors[msg.data[:80]] += 1
            maybe.extend(pending)  # ended with replies outstanding: they may have gone out
            pending.clear()

        async def use(port: int) -> None:
            ws = await connect(session, port)
            pending: set[int] = set()
            waiting[id(ws)] = pending
            background.add(asyncio.ensure_future(replies(ws, pending)))
            old, current[0] = current[0], (ws, pending)
            if old is not None:
                background.add(asyncio.ensure_future(retire(old[0])))

        async def retire(ws: aiohttp.ClientWebSocketResponse) -> None:
            await asyncio.sleep(3.0)  # its last replies arrive, then it goes
            await ws.close()

        async def say() -> None:
            n = 0
            while True:
                await running.wait()
                began, first = time.monotonic(), n
                while running.is_set():
                    ws, pending = current[0]
                    n += 1
                    pending.add(n)
                    await ws.send_str(f"say|g{n % args.groups},{n}")
                    due = began + (n - first) / args.rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))

        await use(args.port)
        sayer = asyncio.ensure_future(say())
        emit({"event": "ready"})
        async for line in lines():
            command, _, rest = line.partition(" ")
            if command == "use":
                await use(int(rest))
                emit({"event": "using", "port": int(rest)})
            elif command == "resume":
                running.set()
                emit({"event": "resumed"})
            elif command == "pause":
                running.clear()
                deadline = time.monotonic() + 10
                # A bounded poll: the replies of what was said come in on their own.
                while any(waiting.values()) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                outstanding = sorted(n for p in waiting.values() for n in p)
                emit({
                    "event": "paused", "ok": sorted(ok), "maybe": sorted(maybe + outstanding),
                    "errors": errors,
                })  # fmt: skip
            elif command == "quit":
                break
        if sayer.done() and sayer.exception() is not None:
            raise sayer.exception()  # type: ignore[misc]
    os._exit(0)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("members")
    m.add_argument("ports", help="comma separated")
    m.add_argument("--connections", type=int, required=True)
    m.add_argument("--first", type=int, default=0)
    m.add_argument("--groups", type=int, default=100)
    m.add_argument("--rule", default="join", help="the rule that joins: RULE|group")
    m.add_argument("--jitter", type=float, default=2.0, help="s, after a connection was lost")
    m.add_argument("--drain-jitter", type=float, default=5.0, help="s, after 1001 reconnect")
    m.add_argument("--no-reconnect", dest="reconnect", action="store_false")
    m.add_argument("--concurrency", type=int, default=100, help="first handshakes at a time")
    m.add_argument("--connect-timeout", type=float, default=300.0)
    p = sub.add_parser("publisher")
    p.add_argument("port", type=int)
    p.add_argument("--groups", type=int, default=100)
    p.add_argument("--rate", type=float, default=50.0, help="messages per second")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    uvloop.run(run_members(args) if args.mode == "members" else run_publisher(args))
