"""The websocket endpoint against a raw TCP client that builds its frames by hand.

This is the test side, so framing is written out here on purpose: frames split
byte by byte, fragmented, unmasked, oversized, with invalid UTF-8. Each must get
RFC 6455's answer (a reply, or a close frame with the right code), never a hung
connection, and the server must go on serving new connections. Every read has
a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the fixtures' types, from this directory's conftest.py
    from conftest import Serve, Served, WaitUntil

TIMEOUT = 3.0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One frame as a client sends it (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload) if length is None else length
    mask_bit = 0x80 if mask else 0
    if size < 126:
        header = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


class RawClient:
    """A websocket client over a bare TCP stream; every read is bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls,
        port: int,
        path: str = "/ws",
        *,
        headers: dict[str, str] | None = None,
        byte_by_byte: bool = False,
    ) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        raw = cls(reader, writer)
        try:
            await raw.handshake(port, path, headers or {}, byte_by_byte=byte_by_byte)
        except BaseException:
            await raw.close()
            raise
        return raw

    async def handshake(
        self, port: int, path: str, headers: dict[str, str], *, byte_by_byte: bool
    ) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode(), byte_by_byte=byte_by_byte)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status, *header_lines = head.decode("latin-1").split("\r\n")
        assert status.startswith("HTTP/1.1 101"), head
        received = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in header_lines if line)
        }
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert received["sec-websocket-accept"] == accept
        assert received["upgrade"].lower() == "websocket"

    async def send(self, data: bytes, *, byte_by_byte: bool = False) -> None:
        if not byte_by_byte:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), TIMEOUT)
            return
        for i in range(len(data)):
            self.writer.write(data[i : i + 1])
            await asyncio.wait_for(self.writer.drain(), TIMEOUT)
            await asyncio.sleep(0.001)

    async def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: object) -> None:
        byte_by_byte = bool(kwargs.pop("byte_by_byte", False))
        await self.send(frame(opcode, payload, **kwargs), byte_by_byte=byte_by_byte)  # type: ignore[arg-type]

    async def read_exactly(self, n: int, timeout: float = TIMEOUT) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def read_frame(self, timeout: float = TIMEOUT) -> Frame:
        first, second = await self.read_exactly(2, timeout)
        assert not second & 0x80, "a server must not mask its frames"
        assert not first & 0x70, "no extension was negotiated, so RSV bits must be 0"
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.read_exactly(2, timeout))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.read_exactly(8, timeout))
        return Frame(bool(first & 0x80), first & 0x0F, await self.read_exactly(size, timeout))

    async def read_data(self, timeout: float = TIMEOUT) -> Frame:
        """The next data frame; server pings on the way are answered."""
        deadline = time.monotonic() + timeout
        while True:
            got = await self.read_frame(max(0.01, deadline - time.monotonic()))
            if got.opcode == PING:
                await self.send_frame(PONG, got.payload)
                continue
            return got

    async def read_text(self, timeout: float = TIMEOUT) -> str:
        got = await self.read_data(timeout)
        assert got.opcode == TEXT and got.fin, got
        return got.payload.decode()

    async def expect_close(self, code: int, timeout: float = TIMEOUT) -> Frame:
        """The server's close frame carries ``code``; then it ends the TCP connection."""
        deadline = time.monotonic() + timeout
        while True:
            got = await self.read_frame(max(0.01, deadline - time.monotonic()))
            if got.opcode == CLOSE:
                break
            assert got.opcode in (TEXT, PING, PONG), got
        assert got.close_code == code, f"expected close {code}, got {got.close_code}: {got}"
        await self.expect_eof(max(0.01, deadline - time.monotonic()) + 2.0)
        return got

    async def expect_eof(self, timeout: float = TIMEOUT) -> None:
        """The server closes the TCP connection (after any frames still on the way)."""
        deadline = time.monotonic() + timeout
        while True:
            rest = await asyncio.wait_for(
                self.reader.read(65536), max(0.01, deadline - time.monotonic())
            )
            if not rest:
                return

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)


async def open_raw(served: Served, **kwargs: object) -> RawClient:
    return await RawClient.open(served.port, served.path, **kwargs)  # type: ignore[arg-type]


async def assert_still_serving(served: Served, wait_until: WaitUntil) -> None:
    """A fresh connection is served, and no connection was left hanging."""
    raw = await open_raw(served)
    try:
        await raw.send_frame(TEXT, b"echo|ok")
        assert await raw.read_text() == "echo|ok"
    finally:
        await raw.close()
    await wait_until(lambda: len(served.registry) == 0, message="all connections to be gone")


@pytest.fixture
async def raw(served: Served) -> AsyncIterator[RawClient]:
    client = await open_raw(served)
    yield client
    await client.close()


# --- well-formed, awkwardly delivered ------------------------------------------


async def test_masked_text_message_is_answered(raw: RawClient) -> None:
    await raw.send_frame(TEXT, b"echo|hi")
    assert await raw.read_text() == "echo|hi"


async def test_message_sent_byte_by_byte_is_reassembled(served: Served) -> None:
    raw = await open_raw(served, byte_by_byte=True)
    try:
        await raw.send_frame(TEXT, "echo|Привет 🎉".encode(), byte_by_byte=True)
        assert await raw.read_text() == "echo|Привет 🎉"
        # A 16-bit length header, split too.
        long = "echo|" + "Ж" * 100
        await raw.send_frame(TEXT, long.encode(), byte_by_byte=True)
        assert await raw.read_text() == long
    finally:
        await raw.close()


async def test_fragmented_message_is_reassembled(raw: RawClient) -> None:
    await raw.send_frame(TEXT, b"echo|fra", fin=False)
    await raw.send_frame(CONT, b"gm", fin=False)
    await raw.send_frame(PING, b"in between")  # control frames may interleave
    await raw.send_frame(CONT, b"ented")
    pong = await raw.read_frame()
    assert (pong.opcode, pong.payload) == (PONG, b"in between")
    assert await raw.read_text() == "echo|fragmented"


async def test_utf8_character_split_across_fragments_and_reads(raw: RawClient) -> None:
    data = "echo|Ёж 你好 🎉".encode()
    cut = data.index("🎉".encode()) + 2  # in the middle of the emoji's four bytes
    await raw.send_frame(TEXT, data[:cut], fin=False, byte_by_byte=True)
    await raw.send_frame(CONT, data[cut:], byte_by_byte=True)
    assert await raw.read_text() == "echo|Ёж 你好 🎉"


async def test_several_frames_in_one_write_are_all_answered(raw: RawClient) -> None:
    await raw.send(b"".join(frame(TEXT, f"echo|{i}".encode()) for i in range(5)))
    # Each call is its own task; all replies arrive, in any order.
    assert sorted([await raw.read_text() for _ in range(5)]) == [f"echo|{i}" for i in range(5)]


async def test_json_call_in_a_raw_frame(raw: RawClient) -> None:
    await raw.send_frame(TEXT, '{"rule":"echo","args":["Ω"],"id":"r"}'.encode())
    assert await raw.read_text() == '{"id":"r","rule":"echo","result":"Ω"}'


async def test_ping_is_answered_with_the_same_payload(raw: RawClient) -> None:
    await raw.send_frame(PING, b"\x00\xffpayload")
    pong = await raw.read_frame()
    assert (pong.opcode, pong.payload) == (PONG, b"\x00\xffpayload")


# --- protocol errors: a close frame with the right code -------------------------


async def test_unmasked_client_frame_closes_with_1002(
    raw: RawClient, served: Served, wait_until: WaitUntil
) -> None:
    """RFC 6455 5.1: a server MUST close on an unmasked client frame."""
    await raw.send_frame(TEXT, b"echo|unmasked", mask=False)
    got = await raw.read_frame()
    assert got.opcode == CLOSE, f"the server accepted an unmasked client frame: it sent {got}"
    assert got.close_code == 1002, got
    await raw.expect_eof()
    await assert_still_serving(served, wait_until)


@pytest.mark.parametrize(
    "payload",
    [b"echo|\xff\xfe", b"echo|\xc3\x28", b"echo|\xed\xa0\x80", b"echo|ok\xe2\x82"],
    ids=["invalid-bytes", "bad-continuation", "surrogate", "truncated"],
)
async def test_invalid_utf8_closes_with_1007(
    raw: RawClient, served: Served, wait_until: WaitUntil, payload: bytes
) -> None:
    await raw.send_frame(TEXT, payload)
    await raw.expect_close(1007)
    await assert_still_serving(served, wait_until)


async def test_invalid_utf8_across_fragments_closes_with_1007(
    raw: RawClient, served: Served, wait_until: WaitUntil
) -> None:
    await raw.send_frame(TEXT, b"echo|\xe2\x82", fin=False)
    await raw.send_frame(CONT, b"x")  # not a continuation byte
    await raw.expect_close(1007)
    await assert_still_serving(served, wait_until)


async def test_oversized_frame_header_closes_with_1009_before_the_payload(
    raw: RawClient, served: Served, wait_until: WaitUntil
) -> None:
    # Only the header: it announces a terabyte that never comes.
    await raw.send(frame(TEXT, b"", length=1 << 40))
    await raw.expect_close(1009)
    await assert_still_serving(served, wait_until)


@pytest.mark.parametrize("kind", ["http", "standalone"])
async def test_frame_over_the_configured_limit_closes_with_1009(
    serve: Serve, wait_until: WaitUntil, kind: str
) -> None:
    served = await serve(kind, ws_max_message_size=1024)
    raw = await open_raw(served)
    try:
        # A 16-bit length over the limit; no payload is sent.
        await raw.send(frame(TEXT, b"", length=2000))
        await raw.expect_close(1009)
    finally:
        await raw.close()
    raw = await open_raw(served)
    try:  # fragments that add up to more than the limit
        await raw.send_frame(TEXT, b"echo|" + b"a" * 600, fin=False)
        await raw.send_frame(CONT, b"b" * 600)
        await raw.expect_close(1009)
    finally:
        await raw.close()
    await assert_still_serving(served, wait_until)


@pytest.mark.parametrize("kind", ["http", "standalone"])
async def test_message_of_exactly_the_limit_is_accepted_one_more_byte_is_not(
    serve: Serve, wait_until: WaitUntil, kind: str
) -> None:
    served = await serve(kind, ws_max_message_size=1024)
    raw = await open_raw(served)
    try:
        exact = b"echo|" + b"a" * (1024 - 5)
        await raw.send_frame(TEXT, exact)
        assert await raw.read_text() == exact.decode()
        await raw.send_frame(TEXT, exact + b"a")
        await raw.expect_close(1009)
    finally:
        await raw.close()
    await assert_still_serving(served, wait_until)


PROTOCOL_ERRORS = {
    "reserved-data-opcode": [frame(0x3, b"x")],
    "reserved-control-opcode": [frame(0xB, b"x")],
    "rsv2-bit": [frame(TEXT, b"echo|x", rsv=0b010)],
    "rsv1-without-deflate": [frame(TEXT, b"echo|x", rsv=0b100)],
    "fragmented-ping": [frame(PING, b"x", fin=False)],
    "ping-over-125-bytes": [frame(PING, b"p" * 126)],
    "continuation-without-start": [frame(CONT, b"x")],
    "text-inside-fragmented-message": [frame(TEXT, b"echo|a", fin=False), frame(TEXT, b"b")],
    "close-code-1005": [frame(CLOSE, close_payload(1005))],
    # 1006 is "never sent on the wire" (RFC 6455 7.4.1); aiohttp accepts it.
    "close-code-1006": [frame(CLOSE, close_payload(1006))],
    "close-code-999": [frame(CLOSE, close_payload(999))],
    "close-one-byte-payload": [frame(CLOSE, b"\x03")],
}


@pytest.mark.parametrize("frames", list(PROTOCOL_ERRORS.values()), ids=list(PROTOCOL_ERRORS))
async def test_protocol_violation_closes_with_1002(
    raw: RawClient, served: Served, wait_until: WaitUntil, frames: list[bytes]
) -> None:
    for data in frames:
        await raw.send(data)
    await raw.expect_close(1002)
    await assert_still_serving(served, wait_until)


# --- close frames ----------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
async def test_client_close_is_answered_with_a_close_frame(
    raw: RawClient, served: Served, wait_until: WaitUntil, code: int
) -> None:
    await raw.send_frame(CLOSE, close_payload(code, "bye Ж".encode()))
    # RFC 6455 5.5.1: the answer "typically" echoes the code; aiohttp answers 1000.
    got = await raw.read_frame()
    assert got.opcode == CLOSE and got.fin, got
    assert got.close_code in (code, 1000)
    await raw.expect_eof()
    await wait_until(lambda: len(served.registry) == 0, message="the connection to be gone")


async def test_close_while_a_handler_runs_cancels_it(
    raw: RawClient, served: Served, wait_until: WaitUntil
) -> None:
    await raw.send_frame(TEXT, b"get_hello|")
    assert await raw.read_text() == "HELLO!"
    await raw.send_frame(CLOSE, close_payload(1000))
    await raw.expect_close(1000)
    await wait_until(lambda: served.registry.task_count() == 0, message="get_hello cancelled")


async def test_server_initiated_close_sends_the_code_and_reason(
    raw: RawClient, served: Served, wait_until: WaitUntil
) -> None:
    await raw.send_frame(TEXT, "bye|4001,пока".encode())
    got = await raw.read_frame()
    assert got.opcode == CLOSE and got.close_code == 4001
    assert got.close_reason == "пока"
    await raw.send_frame(CLOSE, close_payload(4001))
    await raw.expect_eof()
    await wait_until(lambda: len(served.registry) == 0, message="the connection to be gone")


async def test_shutdown_sends_1001_even_to_a_client_that_never_answers(
    serve: Serve, wait_until: WaitUntil
) -> None:
    served = await serve("http")
    raws = [await open_raw(served) for _ in range(3)]
    try:
        for raw in raws:
            await raw.send_frame(TEXT, b"get_hello|")
        await wait_until(lambda: served.registry.task_count() == 3, message="3 handlers")
        started = time.monotonic()
        await served.close()  # the raw clients never send their close frames back
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"shutdown took {elapsed:.2f} s"
        for raw in raws:
            await raw.expect_close(1001)
    finally:
        for raw in raws:
            await raw.close()
    assert served.registry.task_count() == 0


# --- heartbeat -------------------------------------------------------------------


async def test_server_heartbeat_ping_keeps_an_answering_client(serve: Serve) -> None:
    served = await serve("standalone", ws_heartbeat=1)
    raw = await open_raw(served)
    try:
        for _ in range(3):
            got = await raw.read_frame(timeout=2.0)
            assert got.opcode == PING, got
            await raw.send_frame(PONG, got.payload)
        await raw.send_frame(TEXT, b"echo|alive")
        assert await raw.read_text() == "echo|alive"
    finally:
        await raw.close()


async def test_client_that_never_pongs_is_dropped_and_its_handlers_cancelled(
    serve: Serve, wait_until: WaitUntil
) -> None:
    served = await serve("http", ws_heartbeat=1)
    raw = await open_raw(served)
    try:
        await raw.send_frame(TEXT, b"get_hello|")
        await wait_until(lambda: served.registry.task_count() == 1, message="get_hello")
        # Read, but never answer the pings.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                got = await raw.read_frame(timeout=max(0.01, deadline - time.monotonic()))
            except asyncio.IncompleteReadError:
                break
            if got.opcode == CLOSE:
                break
        else:
            pytest.fail("the server kept a client that never answered its pings")
        await wait_until(
            lambda: served.registry.task_count() == 0 and len(served.registry) == 0,
            message="the dead client's handlers to be cancelled",
        )
    finally:
        await raw.close()


# --- not a websocket -------------------------------------------------------------


async def test_plain_http_request_to_the_endpoint_is_refused(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(
            f"GET {served.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert status.split()[1] in (b"400", b"426"), status
    finally:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)


async def test_foreign_origin_handshake_gets_403(served: Served) -> None:
    with pytest.raises(AssertionError, match="403"):
        await open_raw(served, headers={"Origin": "http://evil.example"})


async def test_client_gone_during_the_handshake_is_not_an_error(
    served: Served, wait_until: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    """A client (or a proxy giving up) that sends the upgrade and hangs up at once.

    Seen behind nginx under load: aiohttp then logged "Error handling request"
    with a traceback for every such client. It is routine, not an error.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {served.path} HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    for _ in range(20):
        _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(request)
        # RST instead of FIN: the server's first write finds the transport closing.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    await assert_still_serving(served, wait_until)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# --- hostile JSON ------------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
async def test_deeply_nested_json_gets_an_error_reply_and_the_connection_stays(
    raw: RawClient, served: Served, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    """A 2 KB message nested 1,000 deep closed the connection and logged a traceback."""
    caplog.set_level(logging.WARNING)
    call = '{"rule": "echo", "id": 7, "args": [' + _nested(depth) + "]}"
    await raw.send_frame(TEXT, call.encode())
    reply = json.loads(await raw.read_text())
    assert reply["error"]["code"] == "malformed", reply
    assert "nested deeper than 32" in reply["error"]["message"], reply
    if depth < 100:  # parsed, then refused: the reply says which call
        assert (reply["id"], reply["rule"]) == (7, "echo"), reply
    await raw.send_frame(TEXT, b"echo|still here")
    assert await raw.read_text() == "echo|still here"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_json_nested_to_the_limit_is_a_call(raw: RawClient) -> None:
    arg = json.loads(_nested(30))  # in args, in the call's object: 32 levels
    await raw.send_frame(TEXT, json.dumps({"rule": "echo", "id": 1, "args": [arg]}).encode())
    assert json.loads(await raw.read_text()) == {"id": 1, "rule": "echo", "result": arg}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_are_not_json(raw: RawClient, constant: str) -> None:
    await raw.send_frame(TEXT, ('{"rule": "echo", "id": 1, "args": [' + constant + "]}").encode())
    reply = json.loads(await raw.read_text())
    assert reply["error"]["code"] == "malformed", reply
    assert constant.lstrip("-") in reply["error"]["message"], reply


async def test_a_result_json_cannot_carry_is_an_error_not_nan_on_the_wire(
    raw: RawClient,
) -> None:
    await raw.send_frame(TEXT, b'{"rule": "not_a_number", "id": 2}')
    text = await raw.read_text()
    assert "NaN" not in text, text
    reply = json.loads(text)
    assert reply["id"] == 2 and reply["error"]["code"] == "handler_error", reply


async def test_error_replies_do_not_echo_huge_input(raw: RawClient) -> None:
    name = "r" * 100_000
    await raw.send_frame(TEXT, json.dumps({"rule": name, "id": 3}).encode())
    reply = json.loads(await raw.read_text())
    assert reply["error"]["code"] == "unknown_rule", reply
    assert len(reply["error"]["message"]) < 200, len(reply["error"]["message"])
