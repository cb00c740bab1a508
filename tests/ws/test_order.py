"""One outbound path per connection: a client sees frames in the order they were produced.

A rule's reply, a push from the rule, and a group message the rule published
reach the client in that order, with permessage-deflate negotiated (browsers
ask for it, and aiohttp then compresses large frames in a thread) or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient, TestServer

from tranzit.testing import project_app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHAT = FIXTURES / "chatproject"
N = 30


def big_or_small(n: int) -> str:
    # Every third message is large: with deflate, aiohttp compresses it in a thread.
    return f"{n}:" + ("y" * 40_000 if n % 3 == 0 else "small")


async def receive_all(ws: ClientWebSocketResponse, count: int) -> list[str]:
    return [await ws.receive_str(timeout=10) for _ in range(count)]


@pytest.fixture(params=[15, 0], ids=["deflate", "plain"])
async def ws(request: pytest.FixtureRequest) -> AsyncIterator[ClientWebSocketResponse]:
    """A websocket to the chat fixture, with permessage-deflate negotiated or not."""
    async with TestClient(TestServer(project_app(CHAT), host="127.0.0.1")) as client:
        ws = await client.ws_connect("/ws", compress=request.param)
        yield ws
        await ws.close()


async def test_group_messages_and_replies_interleave_in_order(
    ws: ClientWebSocketResponse,
) -> None:
    await ws.send_str("join|room")
    assert await ws.receive_str(timeout=5) == "join|joined room"
    # Pipelined: every call publishes to the group (this client is its only
    # member), then replies. Both go to this client: group message first.
    for n in range(N):
        await ws.send_str(f"say|room,{big_or_small(n)}")
    got = await receive_all(ws, 2 * N)
    expected = [text for n in range(N) for text in (big_or_small(n), "say|sent")]
    assert [g.partition(":")[0] for g in got] == [e.partition(":")[0] for e in expected]
    assert got == expected


async def test_each_call_s_push_hub_message_and_reply_keep_their_order(
    ws: ClientWebSocketResponse,
) -> None:
    for n in range(N):
        await ws.send_str(f"push_then_reply|{big_or_small(n)}")
    got = await receive_all(ws, 3 * N)
    assert sorted(got) == sorted(
        text
        for n in range(N)
        for text in (
            f"push|{big_or_small(n)}",
            f"direct|{big_or_small(n)}",
            f"push_then_reply|done {n}",
        )
    )
    # Calls run concurrently, so calls may interleave; each call's own frames
    # leave in the order it produced them.
    for n in range(N):
        own = [
            got.index(f"push|{big_or_small(n)}"),
            got.index(f"direct|{big_or_small(n)}"),
            got.index(f"push_then_reply|done {n}"),
        ]
        assert own == sorted(own), (n, [got[i][:20] for i in own])
