"""Groups and broadcast, on the in-process backend and on a real redis-server."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from support import FIXTURES, served_replica

from tranzit.testing import project_app
from tranzit.ws import HUB, BroadcastUnavailable

if TYPE_CHECKING:
    from conftest import RedisServer, WaitUntil

CHAT = FIXTURES / "chatproject"
Client = TestClient[Any, Any]


async def replica(stack: AsyncExitStack, url: str | None) -> Client:
    client: Client = await served_replica(stack, CHAT, url)
    return client


async def call(ws: ClientWebSocketResponse, text: str, expect: str) -> None:
    await ws.send_str(text)
    assert await ws.receive_str(timeout=5) == expect


async def joined(client: Client, group: str) -> ClientWebSocketResponse:
    ws = await client.ws_connect("/ws")
    await call(ws, f"join|{group}", f"join|joined {group}")
    return ws


async def test_group_message_reaches_every_member_once_in_order(backend: str | None) -> None:
    replicas = 1 if backend is None else 3
    async with AsyncExitStack() as stack:
        clients = [await replica(stack, backend) for _ in range(replicas)]
        members = [await joined(clients[i % replicas], "room") for i in range(9)]
        outsider = await clients[0].ws_connect("/ws")
        sender = members[-1]
        for n in range(20):
            await sender.send_str(f"say|room,m{n}")
        expected = [f"m{n}" for n in range(20)]
        for ws in members:
            got = [
                m
                for m in [await ws.receive_str(timeout=5) for _ in range(20 + (ws is sender) * 20)]
                if not m.startswith("say|")
            ]
            assert got == expected
        await outsider.send_str("whoami|")  # the outsider got nothing before its own reply
        assert (await outsider.receive_str(timeout=5)).startswith("whoami|")
        for ws in [*members, outsider]:
            await ws.close()


async def two_replicas(stack: AsyncExitStack, backend: str | None) -> tuple[Client, Client]:
    """Two servers sharing Redis; with the in-process backend, one server twice."""
    first = await replica(stack, backend)
    return first, (first if backend is None else await replica(stack, backend))


async def test_send_to_one_connection_and_to_everyone(backend: str | None) -> None:
    async with AsyncExitStack() as stack:
        a, b = await two_replicas(stack, backend)
        alice, bob = await a.ws_connect("/ws"), await b.ws_connect("/ws")
        await bob.send_str("whoami|")
        bob_id = (await bob.receive_str(timeout=5)).removeprefix("whoami|")
        await call(alice, f"tell|{bob_id},psst", "tell|told")
        assert await bob.receive_str(timeout=5) == "psst"
        await alice.send_str("shout|hi all")
        assert sorted([await alice.receive_str(timeout=5), await alice.receive_str(timeout=5)]) == [
            "hi all",
            "shout|shouted",
        ]
        assert await bob.receive_str(timeout=5) == "hi all"
        await alice.close()
        await bob.close()


async def test_http_view_publishes_to_a_group(backend: str | None) -> None:
    async with AsyncExitStack() as stack:
        web_replica, ws_replica = await two_replicas(stack, backend)
        member = await joined(ws_replica, "news")
        resp = await web_replica.post("/announce", json={"group": "news", "text": "новости 📰"})
        assert resp.status == 200
        assert await member.receive_str(timeout=5) == "новости 📰"
        await member.close()


async def test_closed_connections_leave_their_groups(
    backend: str | None, wait_until: WaitUntil
) -> None:
    async with AsyncExitStack() as stack:
        client = await replica(stack, backend)
        hub = client.app[HUB]  # type: ignore[index]
        ws = await joined(client, "room")
        await call(ws, "join|other", "join|joined other")
        assert len(list(hub.members("room"))) == 1
        await ws.close()
        await wait_until(
            lambda: not list(hub.members("room")) and not list(hub.members("other")),
            timeout=2.0,
            message="the closed connection to leave its groups",
        )
        assert list(hub.members("room")) == [] and list(hub.members("other")) == []
        assert len(hub.connections) == 0


async def test_slow_client_is_closed_and_does_not_delay_others(
    backend: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncExitStack() as stack:
        app = project_app(CHAT, broadcast_url=backend, ws_send_queue=4)
        client: Client = await stack.enter_async_context(
            TestClient(TestServer(app, host="127.0.0.1"))
        )
        hub = app[HUB]
        fast = await joined(client, "room")
        slow = await joined(client, "room")  # joins, then stops reading
        chunk = "x" * 65536
        closed_at = None
        for n in range(200):  # 12.5 MiB: more than the socket buffers hold
            await hub.send_group("room", f"{n}:{chunk}")
            received = await fast.receive_str(timeout=5)
            assert received.startswith(f"{n}:")  # the fast client is never held up
            if closed_at is None and len(list(hub.members("room"))) == 1:
                closed_at = n
            if closed_at is not None and n >= closed_at + 5:
                # A few more after the close, then read the slow client's: it has 1 s
                # (SLOW_CLOSE_TIMEOUT) to take its close frame before its socket is dropped.
                break
        assert any("too slow" in r.getMessage() for r in caplog.records)
        for _ in range(300):  # now read what reached the slow client, up to the close
            msg = await slow.receive(timeout=5)
            if msg.type != WSMsgType.TEXT:
                break
        assert msg.type == WSMsgType.CLOSE and msg.data == 1013
        assert len(list(hub.members("room"))) == 1
        await fast.close()


async def test_redis_outage_local_delivery_error_and_recovery(
    redis_server: RedisServer, wait_until: WaitUntil
) -> None:
    async with AsyncExitStack() as stack:
        a, b = await replica(stack, redis_server.url), await replica(stack, redis_server.url)
        local, remote = await joined(a, "room"), await joined(b, "room")
        hub_a = a.app[HUB]  # type: ignore[index]
        await hub_a.send_group("room", "before")
        assert await local.receive_str(timeout=5) == "before"
        assert await remote.receive_str(timeout=5) == "before"

        redis_server.kill()
        with pytest.raises(BroadcastUnavailable, match="cannot publish to redis://"):
            await hub_a.send_group("room", "during")
        assert await local.receive_str(timeout=5) == "during"  # local delivery kept working
        backend_a, backend_b = hub_a.backend, b.app[HUB].backend  # type: ignore[index]
        # Both listeners see the outage (stop() blocked the loop; give them a turn).
        await wait_until(
            lambda: not (backend_a.ready.is_set() or backend_b.ready.is_set()),
            timeout=5,
            message="both Redis listeners to notice the outage",
        )

        redis_server.start()
        for backend in (backend_a, backend_b):
            await asyncio.wait_for(backend.ready.wait(), timeout=15)
        await hub_a.send_group("room", "after")
        assert await local.receive_str(timeout=5) == "after"
        assert await remote.receive_str(timeout=5) == "after"  # "during" was not queued
        await local.close()
        await remote.close()


@pytest.mark.parametrize("compress", [15, 0], ids=["deflate", "plain"])
async def test_large_and_small_messages_keep_their_order(
    backend: str | None, compress: int
) -> None:
    """Per-connection order holds whichever way each message goes out.

    Short messages to a client with nothing unsent are written at once; others
    wait in the outbox. With permessage-deflate (browsers ask for it) aiohttp
    compresses messages over 16 KiB in a thread, so a send can be in flight
    while the next message is published.
    """
    async with AsyncExitStack() as stack:
        app = project_app(CHAT, broadcast_url=backend)
        client: Client = await stack.enter_async_context(
            TestClient(TestServer(app, host="127.0.0.1"))
        )
        hub = app[HUB]
        members = []
        for _ in range(3):
            ws = await client.ws_connect("/ws", compress=compress)
            await call(ws, "join|room", "join|joined room")
            members.append(ws)
        sent = [f"{n}:" + ("y" * 40_000 if n % 3 == 0 else "small") for n in range(30)]
        for text in sent:
            await hub.send_group("room", text)
        for ws in members:
            got = [await ws.receive_str(timeout=5) for _ in sent]
            assert [g.partition(":")[0] for g in got] == [s.partition(":")[0] for s in sent]
            assert got == sent
            await ws.close()
