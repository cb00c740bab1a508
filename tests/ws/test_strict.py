"""MaskCheck against frames cut at every possible place (RFC 6455 §5.1).

The raw-socket tests show the behaviour end to end; these feed the check
directly, so every split of a header across chunks is covered.
"""

from __future__ import annotations

import os
import random
import struct
from typing import Any

import pytest
from aiohttp.http_websocket import WebSocketError

from tranzit.ws.strict import MaskCheck


def frame(payload: bytes, *, masked: bool = True, opcode: int = 0x1) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if masked:
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


class Inner:
    def __init__(self) -> None:
        self.fed = bytearray()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        pass


class Queue:
    def __init__(self) -> None:
        self.exception: BaseException | None = None

    def set_exception(self, exc: BaseException) -> None:
        self.exception = exc


def feed(stream: bytes, cuts: list[int]) -> tuple[Inner, Queue, list[Any]]:
    inner, queue = Inner(), Queue()
    check = MaskCheck(inner, queue)
    results, last = [], 0
    for cut in [*sorted(cuts), len(stream)]:
        results.append(check.feed_data(stream[last:cut]))
        last = cut
    return inner, queue, results


SIZES = [0, 5, 125, 126, 127, 1000, 65535, 65536, 70000]


@pytest.mark.parametrize("size", SIZES)
def test_masked_frames_pass_unchanged_however_they_are_cut(size: int) -> None:
    stream = frame(b"a" * size) + frame(b"echo|hi") + frame(b"b" * size)
    first_header = 14 if size >= 65536 else 8 if size >= 126 else 6
    # Every cut inside and around the first header, and a few at random.
    rng = random.Random(size)
    cuts = list(range(1, first_header + 2)) + rng.sample(range(1, len(stream)), 5)
    for cut in cuts:
        inner, queue, _ = feed(stream, [cut])
        assert queue.exception is None, cut
        assert bytes(inner.fed) == stream
    inner, queue, _ = feed(stream, list(range(1, len(stream))) if size < 200 else cuts)
    assert queue.exception is None
    assert bytes(inner.fed) == stream


@pytest.mark.parametrize("size", SIZES)
def test_an_unmasked_frame_fails_after_the_frames_before_it(size: int) -> None:
    good = frame(b"x" * size) + frame(b"echo|ok")
    stream = good + frame(b"echo|bad" * 3, masked=False) + frame(b"echo|after")
    rng = random.Random(size)
    for cuts in ([], [len(good) + 1], [len(good) - 1], rng.sample(range(1, len(stream)), 4)):
        inner, queue, _ = feed(stream, cuts)
        assert isinstance(queue.exception, WebSocketError), cuts
        assert queue.exception.code == 1002
        # aiohttp's reader got the good frames' bytes, and of the bad frame at most
        # its first byte (when a chunk ended there), never its payload.
        assert bytes(inner.fed) == stream[: len(inner.fed)]
        assert len(inner.fed) <= len(good) + 1
        assert len(inner.fed) >= max([0, *(c for c in cuts if c <= len(good))])


def test_nothing_is_passed_on_after_the_failure() -> None:
    bad = frame(b"echo|bad", masked=False)
    inner, queue, results = feed(bad + frame(b"echo|late"), [len(bad)])
    assert queue.exception is not None
    assert bytes(inner.fed) == b""
    assert results[-1] == (False, b"")


# -- the private aiohttp names the hooks use ----------------------------------------------


def test_every_private_name_the_hooks_use_exists_in_this_aiohttp() -> None:
    from aiohttp import web_protocol
    from aiohttp.web import WebSocketResponse

    from tranzit.ws.strict import PRIVATE_NAMES, missing_hooks

    assert missing_hooks() == []
    assert hasattr(WebSocketResponse, "_post_start")
    for name in ("_payload_parser", "_message_tail"):
        assert name in web_protocol.RequestHandler.__slots__
    assert set(PRIVATE_NAMES) == {
        "aiohttp.web.WebSocketResponse._post_start",
        "aiohttp.web_protocol.RequestHandler._payload_parser",
        "aiohttp.web_protocol.RequestHandler._message_tail",
    }


def test_a_missing_hook_is_named_once_at_start_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import aiohttp
    from aiohttp import web_protocol

    from tranzit.ws import strict

    slots = tuple(n for n in web_protocol.RequestHandler.__slots__ if n != "_message_tail")
    monkeypatch.setattr(web_protocol.RequestHandler, "__slots__", slots)
    monkeypatch.delattr(web_protocol.RequestHandler, "_message_tail")
    monkeypatch.setattr(strict, "_warned", False)
    assert strict.missing_hooks() == ["aiohttp.web_protocol.RequestHandler._message_tail"]
    with caplog.at_level("WARNING", logger="tranzit.ws"):
        strict.warn_if_hooks_missing()
        strict.warn_if_hooks_missing()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert aiohttp.__version__ in warnings[0] and "_message_tail" in warnings[0]
    assert "unmasked-frame check is off" in warnings[0]
