"""Positions, history and recovery on both backends (a real redis-server for Redis).

Clients speak protocol v2 (subprotocol ``tranzit.2``) through aiohttp's client:
they read ``joined``/``msg``/``recovery`` frames and resume with ``tz.resume``
as tz.js does. A v1 client beside them must see exactly what it always did.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from support import served_replica, write_project

from tranzit.ws import HUB

if TYPE_CHECKING:
    from conftest import RedisServer, WaitUntil

Client = TestClient[Any, Any]

ROUTES = """
from tranzit.ws import Position

async def join(conn, group, events=""):
    await conn.join(group, presence=True, presence_events=bool(events))
    return "joined " + group

async def leave(conn, group):
    conn.leave(group)
    return "left " + group

async def say(conn, group, text):
    position = await conn.hub.send_group(group, text)
    return position.offset if position else "none"

async def count(conn, group):
    return await conn.hub.presence_count(group)

async def members(conn, group, cursor="0"):
    found, following = await conn.hub.presence(group, int(cursor), 2)
    return {"members": sorted(m["id"] for m in found), "next": following}

async def join_since(conn, group, epoch, offset):
    recovery = await conn.join(group, since=Position(epoch, offset))
    return [recovery.recovered, recovery.replayed]

ws_rules = {
    "join": join, "leave": leave, "say": say, "count": count, "members": members,
    "join_since": join_since,
}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(
        tmp_path / "project",
        {"chat": ROUTES},
        "secret_key: tranzit-delivery-tests-0123456789-abcdefghij\n",
    )


async def replica(stack: AsyncExitStack, project: Path, url: str | None, **settings: Any) -> Client:
    client: Client = await served_replica(stack, project, url, **settings)
    return client


class V2:
    """A protocol v2 client: keeps what it was sent, by kind."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.texts: list[str] = []  # everything that is not a tz frame
        self._next_id = 0

    @classmethod
    async def connect(cls, client: Client) -> V2:
        ws = await client.ws_connect("/ws", protocols=["tranzit.2"])
        assert ws.protocol == "tranzit.2"
        return cls(ws)

    async def read(self, timeout: float = 5) -> dict[str, Any] | str:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == WSMsgType.TEXT, msg
        if msg.data.startswith('{"tz":'):
            frame: dict[str, Any] = json.loads(msg.data)
            self.frames.append(frame)
            return frame
        self.texts.append(msg.data)
        return str(msg.data)

    async def until(self, predicate: Any, timeout: float = 5) -> list[dict[str, Any] | str]:
        """Read until ``predicate(item)``; returns everything read, that item last."""
        seen: list[dict[str, Any] | str] = []
        async with asyncio.timeout(timeout):
            while True:
                item = await self.read()
                seen.append(item)
                if predicate(item):
                    return seen

    async def call(self, rule: str, *args: Any) -> Any:
        self._next_id += 1
        call_id = self._next_id
        await self.ws.send_str(json.dumps({"rule": rule, "args": list(args), "id": call_id}))
        seen = await self.until(lambda m: isinstance(m, str) and f'"id":{call_id},' in m)
        reply = json.loads(str(seen[-1]))
        assert "error" not in reply, reply
        return reply["result"]

    def position(self, group: str) -> dict[str, str]:
        """What tz.js would resume from: the last msg, else the join point, with the ticket."""
        ticket, where = None, None
        for frame in self.frames:
            if frame.get("group") != group:
                continue
            if frame["tz"] in ("joined", "recovery") and "ticket" in frame:
                ticket = frame["ticket"]
                where = {"epoch": frame["epoch"], "offset": frame["offset"]}
            elif frame["tz"] == "msg":
                where = {"epoch": frame["epoch"], "offset": frame["offset"]}
        assert ticket is not None and where is not None
        return {**where, "ticket": ticket}

    async def have(self, condition: Any, timeout: float = 5) -> None:
        """Read until ``condition()`` holds (it may already)."""
        async with asyncio.timeout(timeout):
            while not condition():
                await self.read(timeout)

    def count(self, kind: str, key: str) -> int:
        return sum(1 for f in self.frames if f["tz"] == kind and key in f)

    async def heard(self, group: str, text: str, timeout: float = 5) -> None:
        """Until ``text`` arrived in ``group`` (perhaps already, while a call was read)."""
        if text not in self.data(group):
            await self.until(is_frame("msg", group=group, data=text), timeout)

    def data(self, group: str) -> list[str]:
        return [f["data"] for f in self.frames if f["tz"] == "msg" and f["group"] == group]


async def saw_one_and_left(client: Client) -> dict[str, str]:
    """A member of "room" that heard one message ("seen") and went away: where it was."""
    member = await V2.connect(client)
    await member.call("join", "room")
    await member.call("say", "room", "seen")
    await member.heard("room", "seen")
    seen = member.position("room")
    await member.ws.close()
    return seen


def is_frame(kind: str, **fields: Any) -> Any:
    return lambda m: (
        isinstance(m, dict) and m["tz"] == kind and all(m.get(k) == v for k, v in fields.items())
    )


async def test_v2_members_get_positions_v1_members_the_bare_text(
    project: Path, backend: str | None
) -> None:
    async with AsyncExitStack() as stack:
        client = await replica(stack, project, backend)
        new = await V2.connect(client)
        assert await new.call("join", "room") == "joined room"
        joined = next(f for f in new.frames if f["tz"] == "joined")
        assert joined["group"] == "room" and joined["ticket"]
        old = await client.ws_connect("/ws")
        await old.send_str("join|room")
        assert await old.receive_str(timeout=5) == "join|joined room"
        offsets = [await new.call("say", "room", f"m{i}") for i in range(5)]
        await new.heard("room", "m4")
        assert new.data("room") == [f"m{i}" for i in range(5)]
        got = [f["offset"] for f in new.frames if f["tz"] == "msg"]
        assert got == offsets  # the position each publish returned, in order
        keys = [tuple(map(int, o.split("-"))) for o in got]
        assert keys == sorted(keys) and len(set(keys)) == 5
        assert all(tuple(map(int, o.split("-"))) > (0, 0) for o in got)
        assert [await old.receive_str(timeout=5) for _ in range(5)] == [f"m{i}" for i in range(5)]
        await old.close()
        await new.ws.close()


async def test_a_client_that_comes_back_gets_what_it_missed_in_order_then_live(
    project: Path, backend: str | None
) -> None:
    replicas = 1 if backend is None else 2
    async with AsyncExitStack() as stack:
        clients = [await replica(stack, project, backend) for _ in range(replicas)]
        speaker = await V2.connect(clients[0])
        member = await V2.connect(clients[0])
        await member.call("join", "room")
        await speaker.call("say", "room", "before")
        await member.heard("room", "before")
        seen = member.position("room")
        await member.ws.close()
        for i in range(3):
            await speaker.call("say", "room", f"missed{i}")
        back = await V2.connect(clients[-1])  # another replica when there are two
        result = await back.call("tz.resume", {"room": seen})
        assert result == {"room": True}
        assert back.data("room") == ["missed0", "missed1", "missed2"]
        recovery = next(f for f in back.frames if f["tz"] == "recovery")
        assert recovery["recovered"] is True and recovery["replayed"] == 3
        # The replayed messages came before the recovery frame, the result after it.
        assert back.frames.index(recovery) == len(back.frames) - 1
        await speaker.call("say", "room", "live")
        await back.heard("room", "live")
        assert back.data("room") == ["missed0", "missed1", "missed2", "live"]
        # Resuming again from the last position replays nothing.
        again = await V2.connect(clients[0])
        assert await again.call("tz.resume", {"room": back.position("room")}) == {"room": True}
        assert again.data("room") == []
        for ws in (speaker.ws, back.ws, again.ws):
            await ws.close()


@pytest.mark.parametrize("bound", ["size", "age"])
async def test_outside_the_window_is_a_gap_never_a_partial_replay(
    project: Path, backend: str | None, bound: str
) -> None:
    settings = {"ws_history_size": 5} if bound == "size" else {"ws_history_age": 0.3}
    async with AsyncExitStack() as stack:
        client = await replica(stack, project, backend, **settings)
        seen = await saw_one_and_left(client)
        speaker = await V2.connect(client)
        if bound == "size":
            for i in range(12):  # more than the 5 kept (Redis trims in whole nodes: more still)
                await speaker.call("say", "room", f"m{i}")
            if backend is not None:
                for i in range(200):
                    await speaker.call("say", "room", f"n{i}")
        else:
            await speaker.call("say", "room", "old")
            await asyncio.sleep(0.6)
        back = await V2.connect(client)
        assert await back.call("tz.resume", {"room": seen}) == {"room": False}
        assert back.data("room") == []  # nothing partial
        recovery = next(f for f in back.frames if f["tz"] == "recovery")
        assert recovery["recovered"] is False and recovery["replayed"] == 0
        await speaker.call("say", "room", "after")
        await back.heard("room", "after")
        await back.ws.close()
        await speaker.ws.close()


async def test_another_epoch_is_a_gap(project: Path, redis_server: RedisServer) -> None:
    async with AsyncExitStack() as stack:
        client = await replica(stack, project, redis_server.url)
        seen = await saw_one_and_left(client)
        redis_server.kill()  # no persistence: the history and its epoch are gone
        redis_server.start()
        backend = client.app[HUB].backend  # type: ignore[index]
        await asyncio.sleep(0.5)
        await asyncio.wait_for(backend.ready.wait(), timeout=15)
        back = await V2.connect(client)
        assert await back.call("tz.resume", {"room": seen}) == {"room": False}
        recovery = next(f for f in back.frames if f["tz"] == "recovery")
        assert recovery["epoch"] != seen["epoch"]
        await back.ws.close()


async def test_resume_needs_a_ticket_for_that_group(project: Path, backend: str | None) -> None:
    async with AsyncExitStack() as stack:
        client = await replica(stack, project, backend)
        member = await V2.connect(client)
        await member.call("join", "public")
        seen = member.position("public")
        await member.ws.close()
        back = await V2.connect(client)
        forged = {**seen, "ticket": seen["ticket"][:-3] + "abc"}
        result = await back.call(
            "tz.resume",
            {"secret": seen, "public": forged, "none": {"epoch": "x", "offset": "1-0"}},
        )
        assert result == {"secret": "refused", "public": "refused", "none": "refused"}
        assert back.frames == []
        hub = client.app[HUB]  # type: ignore[index]
        assert all(not conn.groups for conn in hub.connections)
        await back.ws.send_str(json.dumps({"rule": "tz.resume", "args": ["room"], "id": 9}))
        reply = json.loads(await back.ws.receive_str(timeout=5))
        assert reply["error"]["code"] == "bad_arguments"
        await back.ws.close()


async def test_a_rule_can_join_from_a_position(project: Path, backend: str | None) -> None:
    async with AsyncExitStack() as stack:
        client = await replica(stack, project, backend)
        speaker = await V2.connect(client)
        await speaker.call("join", "room")
        first = await speaker.call("say", "room", "one")
        await speaker.call("say", "room", "two")
        epoch = next(f for f in speaker.frames if f["tz"] == "joined")["epoch"]
        old = await client.ws_connect("/ws")  # a v1 client: the replay is the bare texts
        await old.send_str(json.dumps({"rule": "join_since", "args": ["room", epoch, first]}))
        assert await old.receive_str(timeout=5) == "two"
        assert json.loads(await old.receive_str(timeout=5))["result"] == [True, 1]
        await old.close()
        await speaker.ws.close()


async def test_presence_across_replicas(
    project: Path, backend: str | None, wait_until: WaitUntil
) -> None:
    replicas = 1 if backend is None else 2
    async with AsyncExitStack() as stack:
        clients = [await replica(stack, project, backend) for _ in range(replicas)]
        watcher = await V2.connect(clients[0])
        await watcher.call("join", "room", "events")
        others = [await V2.connect(clients[i % replicas]) for i in range(4)]
        for other in others:
            await other.call("join", "room")
        counts = [await watcher.call("count", "room")]
        await wait_until(lambda: counts[-1] == 5 or counts.append(0) is None, timeout=1)
        page = await watcher.call("members", "room")
        ids = set(page["members"])
        cursor = page["next"]
        while cursor:
            page = await watcher.call("members", "room", str(cursor))
            ids |= set(page["members"])
            cursor = page["next"]
        assert len(ids) == 5
        await watcher.have(lambda: watcher.count("presence", "join") >= 5)
        joined = {f["join"]["id"] for f in watcher.frames if f["tz"] == "presence" and "join" in f}
        assert joined == ids
        await others[0].ws.close()
        await watcher.have(lambda: watcher.count("presence", "leave") >= 1)
        assert await watcher.call("count", "room") == 4
        for other in others[1:]:
            await other.ws.close()
        await watcher.ws.close()


async def test_members_of_a_dead_replica_disappear(
    project: Path, redis_server: RedisServer, wait_until: WaitUntil
) -> None:
    async with AsyncExitStack() as stack:
        alive = await replica(stack, project, redis_server.url)
        doomed = await replica(stack, project, redis_server.url)
        watcher = await V2.connect(alive)
        await watcher.call("join", "room", "events")
        for _ in range(3):
            member = await V2.connect(doomed)
            await member.call("join", "room")
        assert await watcher.call("count", "room") == 4
        # Dies without a word: its listener and registry refresh stop, nothing is removed.
        backend = doomed.app[HUB].backend  # type: ignore[index]
        assert backend._task is not None
        backend._task.cancel()
        started = asyncio.get_running_loop().time()
        await watcher.have(lambda: watcher.count("presence", "leave") >= 3, timeout=12)
        assert asyncio.get_running_loop().time() - started < 8  # stated: within about 6 s
        assert await watcher.call("count", "room") == 1
        await watcher.ws.close()


class Proxy:
    """A TCP relay to Redis that the test can cut and restore (one replica's network)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._pipes |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in self._pipes:
            pipe.transport.abort()
        self._pipes.clear()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()


async def test_a_replica_cut_off_from_redis_catches_its_members_up(
    project: Path, redis_server: RedisServer, wait_until: WaitUntil
) -> None:
    proxy = Proxy(redis_server.port)
    await proxy.start()
    async with AsyncExitStack() as stack:
        speaking = await replica(stack, project, redis_server.url)
        cut_off = await replica(stack, project, f"redis://127.0.0.1:{proxy.port}/0")
        member = await V2.connect(cut_off)
        await member.call("join", "room")
        old = await cut_off.ws_connect("/ws")
        await old.send_str("join|room")
        assert await old.receive_str(timeout=5) == "join|joined room"
        hub = speaking.app[HUB]  # type: ignore[index]
        await hub.send_group("room", "one")
        await member.heard("room", "one")
        assert await old.receive_str(timeout=5) == "one"

        await proxy.cut()
        backend = cut_off.app[HUB].backend  # type: ignore[index]
        await wait_until(lambda: not backend.ready.is_set(), timeout=5, message="link lost")
        for text in ("two", "three"):
            # Kept in history, so a replica that did not hear it is no failure: no
            # BroadcastIncomplete (it catches up once back).
            await hub.send_group("room", text)
        await proxy.restore()
        await asyncio.wait_for(backend.ready.wait(), timeout=15)
        await member.heard("room", "three", timeout=10)
        await hub.send_group("room", "four")
        await member.heard("room", "four")
        assert member.data("room") == ["one", "two", "three", "four"]
        assert [await old.receive_str(timeout=5) for _ in range(3)] == ["two", "three", "four"]
        await old.close()
        await member.ws.close()
    await proxy.cut()


async def test_a_publish_a_hung_redis_takes_late_reaches_members_once(
    project: Path, redis_server: RedisServer, wait_until: WaitUntil
) -> None:
    from tranzit.ws import BroadcastUnavailable

    async with AsyncExitStack() as stack:
        client = await replica(stack, project, redis_server.url, broadcast_timeout=0.5)
        member = await V2.connect(client)
        await member.call("join", "room")
        hub = client.app[HUB]  # type: ignore[index]
        await hub.send_group("room", "before")
        await member.heard("room", "before")
        redis_server.pause()
        try:
            with pytest.raises(BroadcastUnavailable) as raised:
                await hub.send_group("room", "late")
            assert raised.value.maybe_sent  # sent, unanswered: Redis may still run it
        finally:
            redis_server.resume()
        backend = hub.backend
        await asyncio.wait_for(backend.ready.wait(), timeout=15)
        await member.heard("room", "late", timeout=10)  # from the history, not at once
        await wait_until(lambda: backend.healthy, timeout=5, message="publishing again")
        await hub.send_group("room", "after")
        await member.heard("room", "after")
        assert member.data("room") == ["before", "late", "after"]
        assert "late" not in member.texts  # not also delivered at once, without a position
        await member.ws.close()


async def test_a_join_while_redis_is_away_still_gets_a_ticket(
    project: Path, redis_server: RedisServer
) -> None:
    async with AsyncExitStack() as stack:
        client = await replica(stack, project, redis_server.url)
        redis_server.kill()
        member = await V2.connect(client)
        assert await member.call("join", "room") == "joined room"
        joined = next(f for f in member.frames if f["tz"] == "joined")
        # No position could be looked up: one of no epoch, which a resume reports as a gap.
        assert joined["ticket"] and joined["epoch"] == "" and joined["offset"] == "0-0"
        await member.ws.close()
