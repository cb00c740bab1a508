"""The soak's clients in one process: members, a speaker, and three kinds of bad client.

``python -m bench.clients.ws_soak PORT_A PORT_B SECONDS GOOD STALLED GARBAGE HALF``

* ``GOOD`` members (half on each replica) join group ``soak`` and record the
  sequence numbers of the ``m|<seq>`` messages they receive.
* One speaker on replica A calls ``say|soak,<seq>`` 20 times a second and
  records which calls were answered ``ok`` (delivered to every replica) and
  which ``unavailable`` (the backplane could not carry it).
* ``STALLED`` clients join, then stop reading (small receive buffer) while
  sending an unsolicited pong every 2 s, as if to look alive.
* ``GARBAGE`` clients send junk: bytes that are not UTF-8, deeply nested JSON,
  unknown rules, truncated JSON, binary frames — and reconnect when closed.
* ``HALF`` clients open TCP connections and send half a request, then nothing;
  when the server drops one, it opens another.

Prints one JSON line at the end: what each member received, the speaker's
acknowledgements, and what happened to the bad clients.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import socket
import sys
import time
from typing import Any

import aiohttp

GROUP = "soak"
RATE = 20.0  # the speaker's messages per second


async def member(
    session: aiohttp.ClientSession,
    url: str,
    got: list[int],
    stop: asyncio.Event,
    joined: asyncio.Semaphore,
) -> str:
    # The close handshake at the end is bounded (1 s): a member's end is never what hangs.
    timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)
    async with session.ws_connect(url, heartbeat=None, autoping=True, timeout=timeout) as ws:
        await ws.send_str(f"join|{GROUP}")
        await asyncio.wait_for(ws.receive(), 30)  # joined
        joined.release()
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), 0.5)
            except asyncio.TimeoutError:
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return f"closed: {msg.type.name} {ws.close_code}"
            if msg.data.startswith("m|"):
                got.append(int(msg.data[2:]))
    return "ok"


async def speaker(
    session: aiohttp.ClientSession, url: str, seconds: float, acks: dict[str, list[int]]
) -> None:
    async with session.ws_connect(
        url, heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=1.0)
    ) as ws:
        await ws.send_str(f"join|{GROUP}-speaker")
        await asyncio.wait_for(ws.receive(), 5)  # joined
        seq = 0
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            seq += 1
            await ws.send_str(f"say|{GROUP},{seq}")
            while True:
                msg = await asyncio.wait_for(ws.receive(), 5)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"speaker closed: {msg.type.name} {ws.close_code}")
                if msg.data.startswith("say|"):
                    acks.setdefault(msg.data[4:].split(",")[0], []).append(seq)
                    break
            await asyncio.sleep(max(0.0, began + seq / RATE - time.monotonic()))


def _handshake(port: int, path: str = "/") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (the test side of the protocol, written out on purpose)."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 0xFE]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0xFF]) + size.to_bytes(8, "big")
    # XOR as one big integer: fast for the large frames the stalled clients send.
    mask = int.from_bytes((key * (size // 4 + 1))[:size], "big")
    masked = (int.from_bytes(payload, "big") ^ mask).to_bytes(size, "big")
    return head + key + masked


async def stalled(port: int, stop: asyncio.Event, result: dict[str, int]) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, _handshake(port))
    await asyncio.sleep(0.2)
    await loop.sock_sendall(sock, _frame(0x1, f"join|{GROUP}".encode()))
    # 40 echoes of 512 KiB asked for, none read: 20 MiB the server would hold for it.
    big = _frame(0x1, b"echo|" + b"x" * (512 * 1024))
    for _ in range(40):
        await asyncio.wait_for(loop.sock_sendall(sock, big), 5)
    try:
        while not stop.is_set():
            await asyncio.sleep(2)
            await asyncio.wait_for(loop.sock_sendall(sock, _frame(0xA, b"alive")), 2)
        result["still_open"] += 1
    except (OSError, asyncio.TimeoutError):
        result["closed_by_server"] += 1
    finally:
        sock.close()


JUNK = [
    b"\xff\xfe not utf-8",
    ('{"rule": "echo", "args": [' + "[" * 2000 + "]" * 2000 + "]}").encode(),
    b"no_such_rule|x",
    b'{"rule": "echo", "args": [1,',
    b"|",
]


async def garbage(port: int, stop: asyncio.Event, result: dict[str, int]) -> None:
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_handshake(port))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            while not stop.is_set():
                junk = random.choice(JUNK)
                writer.write(_frame(0x2 if random.random() < 0.1 else 0x1, junk))
                await writer.drain()
                result["sent"] += 1
                # Read what comes back (errors, or a close), without waiting long.
                data = await asyncio.wait_for(reader.read(65536), 2)
                if not data:
                    result["closed_by_server"] += 1
                    break
                await asyncio.sleep(0.1)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            result["closed_by_server"] += 1
        finally:
            writer.close()


async def half(port: int, stop: asyncio.Event, result: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            result["refused"] += 1
            await asyncio.sleep(1)
            continue
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
        result["opened"] += 1
        try:
            while not stop.is_set():
                try:
                    if not await asyncio.wait_for(reader.read(1024), 0.5):
                        result["dropped_by_server"] += 1
                        break
                except asyncio.TimeoutError:
                    continue
        except OSError:
            result["dropped_by_server"] += 1
        finally:
            writer.close()


async def _settle(tasks: list[asyncio.Future[Any]], timeout: float) -> list[asyncio.Future[Any]]:
    """Wait up to ``timeout`` for ``tasks``; cancel the ones still running (counted as hung)."""
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2)
    return tasks


def _end(task: asyncio.Future[Any]) -> str:
    if task.cancelled():
        return "hung at the end"
    error = task.exception()
    return f"{type(error).__name__}: {error}" if error else str(task.result())


async def _watchdog(after: float) -> None:
    """Should the client itself stall, every task's stack reaches the log (stderr), then exit."""
    await asyncio.sleep(after)
    print(f"ws_soak: still running after {after:.0f} s; tasks:", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()
    os._exit(3)


def _phase(text: str) -> None:
    print(f"ws_soak: {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


async def main(
    port_a: int, port_b: int, seconds: float, good: int, n_stalled: int, n_garbage: int, n_half: int
) -> dict[str, Any]:
    watchdog = asyncio.ensure_future(_watchdog(seconds + 40))
    stop = asyncio.Event()
    joined = asyncio.Semaphore(0)
    received: list[list[int]] = [[] for _ in range(good)]
    acks: dict[str, list[int]] = {}
    bad = {
        "stalled": {"closed_by_server": 0, "still_open": 0},
        "garbage": {"sent": 0, "closed_by_server": 0},
        "half": {"opened": 0, "dropped_by_server": 0, "refused": 0},
    }
    ports = [port_a, port_b]
    # No connection limit: aiohttp's default (100 per session) would leave members and the
    # speaker waiting for a free slot.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        members = [
            asyncio.ensure_future(
                member(session, f"ws://127.0.0.1:{ports[i % 2]}/", received[i], stop, joined)
            )
            for i in range(good)
        ]
        others = [
            asyncio.ensure_future(stalled(ports[i % 2], stop, bad["stalled"]))
            for i in range(n_stalled)
        ]
        others += [
            asyncio.ensure_future(garbage(ports[i % 2], stop, bad["garbage"]))
            for i in range(n_garbage)
        ]
        others += [
            asyncio.ensure_future(half(ports[i % 2], stop, bad["half"])) for i in range(n_half)
        ]
        # Every member has joined (each releases once), then the bad clients had a second.
        for _ in range(good):
            await asyncio.wait_for(joined.acquire(), 60)
        await asyncio.sleep(1.0)
        print(json.dumps({"event": "started"}), flush=True)
        await speaker(session, f"ws://127.0.0.1:{port_a}/", seconds, acks)
        _phase("the speaker is done")
        await asyncio.sleep(1.0)  # the last messages arrive
        stop.set()
        ends = [_end(task) for task in await _settle(members, 10)]
        _phase("members settled")
        await _settle(others, 10)
        _phase("bad clients settled")
    watchdog.cancel()
    return {
        "event": "done",
        "received": received,
        "member_ends": [str(e) for e in ends],
        "acks": acks,
        "bad": bad,
    }


if __name__ == "__main__":
    a, b, secs, *counts = sys.argv[1:]
    out = asyncio.run(main(int(a), int(b), float(secs), *(int(c) for c in counts)))
    print(json.dumps(out), flush=True)
