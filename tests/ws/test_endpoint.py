"""The websocket rule endpoint, driven by an independent client (``websockets``).

The ``wsproject`` fixture is served for real on 127.0.0.1, both on the HTTP
app's ``/ws`` and on the standalone websocket app (any path), see conftest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.frames import Frame, Opcode

from tranzit.ws.connection import Connection

if TYPE_CHECKING:  # the fixtures' types, from this directory's conftest.py
    from conftest import Serve, Served, WaitUntil

WSPROJECT = Path(__file__).resolve().parent.parent / "fixtures" / "wsproject"

TIMEOUT = 3.0


@asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A ``websockets`` client with bounded timeouts and no proxy lookup."""
    options: dict[str, Any] = {"open_timeout": TIMEOUT, "close_timeout": 2, "proxy": None}
    options.update(kwargs)
    async with connect(url, **options) as ws:
        yield ws


async def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> str:
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str), f"expected a text message, got {message!r}"
    return message


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> Any:
    return json.loads(await recv(ws, timeout))


async def call(ws: ClientConnection, message: str) -> str:
    await ws.send(message)
    return await recv(ws)


async def assert_usable(ws: ClientConnection) -> None:
    """The connection still answers a plain call."""
    assert await call(ws, "echo|still here") == "echo|still here"


def views() -> Any:
    """The fixture app's ``views`` module, as the server imported it."""
    import sys

    module = sys.modules["apps.wsrules.views"]
    assert str(WSPROJECT) in str(module.__file__)
    return module


# --- the old text form -------------------------------------------------------


async def test_get_hello_pushes_hello_repeatedly(served: Served) -> None:
    async with client(served.url) as ws:
        await ws.send("get_hello|")
        started = time.monotonic()
        for _ in range(3):
            assert await recv(ws) == "HELLO!"
        assert time.monotonic() - started < TIMEOUT


@pytest.mark.parametrize("how", ["close frame", "abrupt"])
async def test_disconnect_cancels_running_handlers(
    served: Served, wait_until: WaitUntil, how: str
) -> None:
    async with client(served.url) as ws:
        await ws.send("get_hello|")
        await ws.send('{"rule": "get_hello", "id": 1}')
        assert await recv(ws) in ("HELLO!", '{"id":1,"rule":"get_hello","data":"HELLO!"}')
        await wait_until(lambda: served.registry.task_count() == 2, message="2 running handlers")
        if how == "abrupt":
            ws.transport.abort()
    await wait_until(
        lambda: served.registry.task_count() == 0 and len(served.registry) == 0,
        timeout=3.0,
        message="handler tasks and connections to return to zero",
    )
    # Nothing of that connection is left running anywhere in the loop.
    leftovers = [
        t for t in asyncio.all_tasks() if t.get_name().startswith("tranzit-rule-") and not t.done()
    ]
    assert leftovers == []


async def test_unknown_rule_is_an_error_and_connection_stays_usable(served: Served) -> None:
    async with client(served.url) as ws:
        reply = await call(ws, "no_such_rule|a,b")
        assert reply.startswith("error|unknown_rule,no_such_rule,")
        await assert_usable(ws)
        reply = await call(ws, '{"rule": "no_such_rule", "args": [], "id": "u1"}')
        assert json.loads(reply)["error"]["code"] == "unknown_rule"
        assert json.loads(reply)["id"] == "u1"
        await assert_usable(ws)


@pytest.mark.parametrize(
    "message",
    [
        "no bar at all",
        "",
        "|args without a name",
        "{not json",
        '  {"rule": ',
        "[1, 2]",
        '{"args": []}',
        '{"rule": ""}',
        '{"rule": 5}',
        '{"rule": "echo", "args": "not a list"}',
        '{"rule": "echo", "args": {"a": 1}}',
        '{"rule": "echo", "id": [1]}',
        '{"rule": "echo", "id": true}',
        '{"rule": "echo", "args": ["x"], "extra": 1}',
    ],
)
async def test_malformed_message_is_an_error_and_connection_stays_usable(
    served: Served, message: str
) -> None:
    async with client(served.url) as ws:
        reply = await call(ws, message)
        if message.lstrip().startswith("{"):
            error = json.loads(reply)["error"]
            assert error["code"] == "malformed"
            assert error["message"]
        else:
            assert reply.startswith("error|malformed,")
        await assert_usable(ws)


async def test_binary_message_is_refused_and_connection_stays_usable(served: Served) -> None:
    async with client(served.url) as ws:
        reply = await call(ws, b"echo|bytes")  # type: ignore[arg-type]
        assert reply.startswith("error|binary_unsupported,")
        await assert_usable(ws)


async def test_wrong_argument_count_is_an_error(served: Served) -> None:
    async with client(served.url) as ws:
        # ``bye(conn, code, reason)`` takes two arguments; the text form gives one.
        assert (await call(ws, "bye|4001")).startswith("error|bad_arguments,bye,")
        # The JSON form passes its list as it is: no fitting.
        for args in ([], ["a", "b"]):
            reply = json.loads(await call(ws, json.dumps({"rule": "echo", "args": args, "id": 3})))
            assert reply["id"] == 3 and reply["error"]["code"] == "bad_arguments"
        await assert_usable(ws)


async def test_text_arguments_beyond_a_handlers_parameters_stay_in_the_last(
    served: Served,
) -> None:
    async with client(served.url) as ws:
        # ``echo(conn, text)``: everything after the '|' is its one argument.
        assert await call(ws, "echo|a, b,c") == "echo|a, b,c"
        # ``ping(conn)``: ``ping|`` calls it with no arguments.
        assert await call(ws, "ping|") == "ping|pong"
        assert (await call(ws, "ping|x")).startswith("error|bad_arguments,ping,")
        await ws.send("bye|4002,reason, with a comma")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert (ws.close_code, ws.close_reason) == (4002, "reason, with a comma")


async def test_raising_handler_replies_with_error_and_logs_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tranzit")
    async with client(served.url) as ws:
        reply = await call(ws, "boom|a,b")
        assert reply == "error|handler_error,boom,ValueError: boom: a,b"
        reply = json.loads(await call(ws, '{"rule": "boom", "args": ["c"], "id": "b2"}'))
        assert reply == {
            "id": "b2",
            "rule": "boom",
            "error": {"code": "handler_error", "message": "ValueError: boom: c"},
        }
        await assert_usable(ws)
    records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ValueError]
    assert len(records) == 2, caplog.text
    assert records[0].levelno == logging.ERROR
    assert "boom" in records[0].getMessage()
    assert "Traceback (most recent call last)" in caplog.text
    assert "views.py" in caplog.text and "raise ValueError" in caplog.text


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("echo_args|a, b", ["a", " b"]),
        ("echo_args|", [""]),
        ("echo_args|a,,b,", ["a", "", "b", ""]),
        ("echo_args| spaced ", [" spaced "]),
        ("echo_args|a|b,c", ["a|b", "c"]),
        ('echo_args|{"json": 1}', ['{"json": 1}']),
    ],
)
async def test_text_arguments_split_exactly_like_the_original(
    served: Served, message: str, expected: list[str]
) -> None:
    async with client(served.url) as ws:
        reply = await call(ws, message)
        name, _, payload = reply.partition("|")
        assert name == "echo_args"
        assert json.loads(payload) == expected


async def test_old_style_handler_gets_send_func_and_writer(served: Served) -> None:
    async with client(served.url) as ws:
        assert await call(ws, "echo_old|a, b") == "echo_old|a, b"


async def test_connection_style_return_value_is_the_reply(served: Served) -> None:
    async with client(served.url) as ws:
        assert await call(ws, "echo|hi there") == "echo|hi there"
        await ws.send('{"rule": "echo", "args": ["hi"], "id": 7}')
        assert await recv_json(ws) == {"id": 7, "rule": "echo", "result": "hi"}


async def test_connection_object_id_state_and_send_json(served: Served) -> None:
    async with client(served.url) as first, client(served.url) as second:
        await first.send("conn_info|x")
        info = await recv_json(first)
        assert info["calls"] == 1 and info["args"] == ["x"]
        assert (await recv(first)).startswith("conn_info|")  # str() of the returned dict
        await first.send('{"rule": "conn_info", "args": [1, "two"], "id": null}')
        again = await recv_json(first)
        assert again == {"id": info["id"], "calls": 2, "args": [1, "two"]}
        assert await recv_json(first) == {
            "id": None,
            "rule": "conn_info",
            "result": {"ok": True, "args": [1, "two"]},
        }
        await second.send("conn_info|")
        other = await recv_json(second)
        assert other["calls"] == 1, "state is per connection"
        assert other["id"] != info["id"]
        ids = {c.id for c in served.connections()}
        assert ids == {info["id"], other["id"]}


async def test_handler_closing_the_connection_sends_its_close_code(
    served: Served, wait_until: WaitUntil
) -> None:
    async with client(served.url) as ws:
        await ws.send("bye|4001,see you")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 4001
        assert ws.close_reason == "see you"
    await wait_until(lambda: len(served.registry) == 0, message="the connection to be dropped")


# --- the JSON form -----------------------------------------------------------


async def test_json_calls_carry_their_id_in_data_result_and_error(served: Served) -> None:
    async with client(served.url) as ws:
        await ws.send('{"rule": "get_hello", "args": [], "id": "hello-1"}')
        for _ in range(2):
            assert await recv_json(ws) == {"id": "hello-1", "rule": "get_hello", "data": "HELLO!"}
        await ws.send('{"rule": "echo_old", "args": ["a", 2], "id": 12}')
        # Interleaved with HELLO! pushes; pick this call's messages by id.
        mine: list[Any] = []
        deadline = time.monotonic() + TIMEOUT
        while len(mine) < 2 and time.monotonic() < deadline:
            message = await recv_json(ws)
            if message["id"] == 12:
                mine.append(message)
            else:
                assert message == {"id": "hello-1", "rule": "get_hello", "data": "HELLO!"}
        assert mine == [
            {"id": 12, "rule": "echo_old", "data": "echo_old|a,2"},
            {"id": 12, "rule": "echo_old", "result": None},
        ]


async def test_json_replies_follow_their_calls_not_arrival_order(served: Served) -> None:
    async with client(served.url) as ws:
        await ws.send('{"rule": "slow", "args": ["0.3"], "id": 1}')
        await ws.send('{"rule": "echo", "args": ["fast"], "id": 2}')
        await ws.send('{"rule": "nope", "id": 3}')
        replies = [await recv_json(ws) for _ in range(3)]
        by_id = {r["id"]: r for r in replies}
        assert by_id[1] == {"id": 1, "rule": "slow", "result": "done"}
        assert by_id[2] == {"id": 2, "rule": "echo", "result": "fast"}
        assert by_id[3]["error"]["code"] == "unknown_rule" and by_id[3]["rule"] == "nope"
        assert replies[-1]["id"] == 1, "the slow call answers last"


# --- UTF-8 -------------------------------------------------------------------

UNICODE_CASES = [
    "Привет, мир! Ёжик в тумане",
    "你好，世界。日本語のテキスト、한국어",  # noqa: RUF001
    "🎉🐍👍🏽👨‍👩‍👧‍👦🇺🇦",
    "mixed: é ß Ω ∑ — Привет 你好 🎉 \u0000 end",
]


@pytest.mark.parametrize("text", UNICODE_CASES, ids=["cyrillic", "cjk", "emoji", "mixed"])
@pytest.mark.parametrize("compression", ["deflate", None])
async def test_unicode_round_trips_in_both_forms(
    served: Served, text: str, compression: str | None
) -> None:
    async with client(served.url, compression=compression) as ws:
        # Old-style echo joins the comma-split arguments back together.
        assert await call(ws, "echo_old|" + text) == "echo_old|" + text
        assert await call(ws, "echo_args|" + text) == "echo_args|" + json.dumps(
            text.split(","), ensure_ascii=False
        )
        await ws.send(json.dumps({"rule": "echo", "args": [text], "id": text}))
        assert await recv_json(ws) == {"id": text, "rule": "echo", "result": text}
        await ws.send(json.dumps({"rule": "echo", "args": [text], "id": 1}, ensure_ascii=False))
        assert await recv_json(ws) == {"id": 1, "rule": "echo", "result": text}


async def test_server_originated_unicode_is_intact(served: Served) -> None:
    sample = views().UNICODE_SAMPLE
    async with client(served.url) as ws:
        await ws.send("unicode|")
        assert await recv(ws) == "unicode|" + sample
        assert await recv(ws) == "unicode|" + sample
        await ws.send('{"rule": "unicode", "id": "u"}')
        assert await recv(ws) == "unicode|" + sample
        assert await recv_json(ws) == {"id": "u", "rule": "unicode", "result": sample}


# --- limits ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http", "standalone"])
async def test_message_over_the_size_limit_closes_with_1009(
    serve: Serve, wait_until: WaitUntil, kind: str
) -> None:
    served = await serve(kind, ws_max_message_size=1024)
    async with client(served.url) as ws:
        at_limit = "echo|" + "x" * (1024 - len("echo|"))
        assert await call(ws, at_limit) == at_limit
        await ws.send("echo|" + "x" * 1100)
        with pytest.raises(ConnectionClosedError):
            await recv(ws)
        assert ws.close_code == 1009
    # The limit counts UTF-8 bytes, not characters: 600 Cyrillic letters are 1200 bytes.
    async with client(served.url) as ws:
        await ws.send("echo|" + "П" * 600)
        with pytest.raises(ConnectionClosedError):
            await recv(ws)
        assert ws.close_code == 1009
    # Fragments count together.
    async with client(served.url) as ws:
        await ws.send(["echo|" + "a" * 500, "b" * 500, "c" * 500])
        with pytest.raises(ConnectionClosedError):
            await recv(ws)
        assert ws.close_code == 1009
    await wait_until(lambda: len(served.registry) == 0, message="closed connections to go")
    async with client(served.url) as ws:
        await assert_usable(ws)


async def test_fragmented_message_from_client_is_reassembled(served: Served) -> None:
    async with client(served.url) as ws:
        await ws.send(["echo|frag", "mented ", "Привет 🎉"])
        assert await recv(ws) == "echo|fragmented Привет 🎉"


async def test_too_many_tasks_is_an_error_while_the_connection_stays_open(
    serve: Serve, wait_until: WaitUntil
) -> None:
    served = await serve("http", ws_max_tasks=2)
    async with client(served.url) as ws:
        await ws.send("get_hello|")
        await ws.send("get_hello|")
        await wait_until(lambda: served.registry.task_count() == 2, message="2 handlers")
        await ws.send("echo|third")
        await ws.send('{"rule": "echo", "args": ["fourth"], "id": 4}')
        refusals: list[str] = []
        hellos = 0
        deadline = time.monotonic() + TIMEOUT
        while len(refusals) < 2 and time.monotonic() < deadline:
            message = await recv(ws)
            if message == "HELLO!":
                hellos += 1
            else:
                refusals.append(message)
        assert refusals[0].startswith("error|too_many_tasks,echo,")
        assert json.loads(refusals[1])["error"]["code"] == "too_many_tasks"
        assert json.loads(refusals[1])["id"] == 4
        # Still open, and the running handlers keep pushing.
        assert await recv(ws) == "HELLO!"
        assert served.registry.task_count() == 2


async def test_task_slot_is_freed_when_a_handler_returns(
    serve: Serve, wait_until: WaitUntil
) -> None:
    served = await serve("standalone", ws_max_tasks=1)
    async with client(served.url) as ws:
        await ws.send("slow|0.3")
        await wait_until(lambda: served.registry.task_count() == 1, message="the slow handler")
        assert (await call(ws, "echo|busy")).startswith("error|too_many_tasks,echo,")
        assert await recv(ws) == "slow|done"
        await wait_until(lambda: served.registry.task_count() == 0, message="the slot to free")
        await assert_usable(ws)


async def test_slow_reader_blocks_the_pushing_handler(serve: Serve, wait_until: WaitUntil) -> None:
    """A client that stops reading slows the handler down; the server does not buffer on."""
    served = await serve("http", ws_send_queue=4)
    pushed = views().PUSHED
    size = 64 * 1024
    # max_queue=1: the client stops reading from its socket after one unread message.
    async with client(served.url, compression=None, max_queue=1, max_size=None) as ws:
        await ws.send(f"flood|slow-reader,{size}")
        await wait_until(lambda: "slow-reader" in pushed, message="the flood to start")

        # The handler's send count must stop growing: it is blocked on the socket.
        deadline = time.monotonic() + 10
        stable_since, last = time.monotonic(), -1
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            count = pushed["slow-reader"]
            if count != last:
                stable_since, last = time.monotonic(), count
            elif time.monotonic() - stable_since > 0.5:
                break
        else:
            pytest.fail(f"the handler kept sending: {pushed['slow-reader']} messages")
        blocked_at = pushed["slow-reader"]
        # Kernel buffers absorb some megabytes on loopback; far less than unbounded.
        assert blocked_at * size < 64 * 1024 * 1024, blocked_at
        (conn,) = served.connections()
        transport = conn.request.transport
        assert transport is not None
        assert transport.get_write_buffer_size() < 1024 * 1024
        assert served.registry.task_count() == 1

        # Reading again lets the handler go on: it was waiting, not dead.
        for _ in range(blocked_at + 50):
            assert len(await recv(ws)) == size
        await wait_until(lambda: pushed["slow-reader"] > blocked_at, message="the flood to resume")
    await wait_until(lambda: served.registry.task_count() == 0, message="the flood to be cancelled")


# --- Origin ------------------------------------------------------------------


async def expect_refused(url: str, origin: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with client(url, origin=origin):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://127.0.0.1:1", "http://127.0.0.1.evil.example"],
)
async def test_foreign_origin_is_refused_with_403(
    served: Served, wait_until: WaitUntil, origin: str
) -> None:
    await expect_refused(served.url, origin)
    assert len(served.registry) == 0
    async with client(served.url) as ws:  # the server is still fine
        await assert_usable(ws)


async def test_same_host_origin_and_no_origin_are_allowed(served: Served) -> None:
    async with client(served.url, origin=served.origin) as ws:
        await assert_usable(ws)
    async with client(served.url) as ws:
        assert "Origin" not in ws.request.headers
        await assert_usable(ws)


@pytest.mark.parametrize("kind", ["http", "standalone"])
async def test_allowlisted_origin_is_allowed(serve: Serve, kind: str) -> None:
    served = await serve(kind, ws_allowed_origins=("https://app.example",))
    async with client(served.url, origin="https://app.example") as ws:
        await assert_usable(ws)
    await expect_refused(served.url, "https://other.example")


async def test_wildcard_origin_allows_all(serve: Serve) -> None:
    served = await serve("http", ws_allowed_origins=("*",))
    async with client(served.url, origin="https://anything.example") as ws:
        await assert_usable(ws)


# --- liveness ----------------------------------------------------------------


class PingRecorder(ClientConnection):
    """A client connection that remembers when the server pinged it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pings: list[float] = []

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings.append(time.monotonic())
        super().process_event(event)


async def test_server_heartbeat_pings_and_answers_client_pings(
    serve: Serve, wait_until: WaitUntil
) -> None:
    served = await serve("http", ws_heartbeat=1)
    async with client(served.url, create_connection=PingRecorder, ping_interval=None) as ws:
        assert isinstance(ws, PingRecorder)
        await wait_until(lambda: len(ws.pings) >= 3, timeout=6, message="3 server pings")
        # The client's automatic pongs keep it alive across several heartbeats.
        await assert_usable(ws)
        latency = await asyncio.wait_for(await ws.ping(b"are you there"), TIMEOUT)
        assert latency >= 0


# --- shutdown ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http", "standalone"])
async def test_shutdown_closes_clients_with_1001_promptly(
    serve: Serve, wait_until: WaitUntil, kind: str
) -> None:
    served = await serve(kind)
    async with client(served.url) as first, client(served.url) as second:
        for ws in (first, second):
            await ws.send("get_hello|")
            await ws.send('{"rule": "get_hello", "id": 1}')
            await ws.send("slow|60")
        await wait_until(lambda: served.registry.task_count() == 6, message="6 handlers")
        started = time.monotonic()
        await served.close()
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"shutdown took {elapsed:.2f} s"
        for ws in (first, second):
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 1001
    assert served.registry.task_count() == 0
    assert len(served.registry) == 0


async def test_many_clients_get_their_own_replies(served: Served) -> None:
    async def one(n: int) -> None:
        async with client(served.url) as ws:
            for i in range(5):
                assert await call(ws, f"echo|{n}-{i}-Ж") == f"echo|{n}-{i}-Ж"

    await asyncio.gather(*(one(n) for n in range(20)))


def test_connection_is_the_documented_handler_type() -> None:
    # The fixture's connection-style handlers rely on the documented attributes.
    for name in ("id", "state", "request", "send_text", "send_json", "close"):
        assert name in dir(Connection), name
