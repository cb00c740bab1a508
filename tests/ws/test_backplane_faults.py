"""The Redis backplane under faults: garbage on the channel, a hung or restarted Redis.

Each test runs its own redis-server on a loopback port and breaks it the way
production does: SIGSTOP (a hung server), SIGKILL then a restart on the same
port (a restarted one, with its registry gone), and messages published on the
channel by someone else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
import redis
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient
from support import FIXTURES, served_replica

from tranzit.limits import BROADCAST_TIMEOUT
from tranzit.ws import HUB
from tranzit.ws.backplane import BroadcastIncomplete, BroadcastUnavailable, Envelope
from tranzit.ws.redis_backend import RedisBackend

if TYPE_CHECKING:
    from conftest import RedisServer, WaitUntil

CHAT = FIXTURES / "chatproject"
CHANNEL = "tranzit:broadcast"


class Replica:
    """A backend started with a deliver callback that records what it hears.

    With ``fail_once`` the callback raises on the first envelope (a bug in it).
    """

    def __init__(self, url: str, name: str, *, fail_once: bool = False, **options: Any) -> None:
        self.backend = RedisBackend(url, name=name, **options)
        self.heard: asyncio.Queue[Envelope] = asyncio.Queue()
        self.fail_once = fail_once

    async def deliver(self, envelope: Envelope) -> None:
        if self.fail_once:
            self.fail_once = False
            raise RuntimeError("a bug in deliver")
        self.heard.put_nowait(envelope)

    async def next_text(self) -> str:
        return (await asyncio.wait_for(self.heard.get(), timeout=5)).text


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[Any]:
    """``await replicas(name, **options)``: a started Replica, closed after the test."""
    started: list[Replica] = []

    async def start(name: str, **options: Any) -> Replica:
        replica = Replica(redis_server.url, name, **options)
        await replica.backend.start(replica.deliver)
        started.append(replica)
        await asyncio.wait_for(replica.backend.ready.wait(), timeout=5)
        return replica

    yield start
    for replica in started:
        await asyncio.wait_for(replica.backend.close(), timeout=10)


async def publish(replica: Replica, text: str) -> None:
    await asyncio.wait_for(
        replica.backend.publish(Envelope("all", "", text, replica.backend.name)), timeout=10
    )


# Garbage on the channel ------------------------------------------------------------


GARBAGE = [
    b"[" * 200_000,  # nested: the decoder must not recurse into it
    b'["group", "room", ' + b"[" * 100_000 + b"]" * 100_000 + b', "x"]',
    b"x" * (5 * 1024 * 1024),  # huge, and not JSON
    b"hello",
    b"",
    b"\xff\xfe not utf-8",
    b'{"kind": "group"}',
    b'["group", "room", "text"]',
    b'["group", "room", "text", "origin", "extra"]',
    b'["group", "room", 1, "origin"]',
    b'["party", "room", "text", "origin"]',
    b'["group", "room", "bad \\x escape", "origin"]',
]


async def test_garbage_on_the_channel_is_dropped_and_delivery_continues(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, wait_until: WaitUntil
) -> None:
    caplog.set_level(logging.WARNING, logger="tranzit")
    async with AsyncExitStack() as stack:
        a = await chat_replica(stack, redis_server.url)
        b = await chat_replica(stack, redis_server.url)
        local, remote = await joined(a, "room"), await joined(b, "room")
        raw = redis.asyncio.Redis.from_url(redis_server.url)
        stack.push_async_callback(raw.aclose)
        for data in GARBAGE:
            assert await raw.publish(CHANNEL, data) == 2  # both replicas were listening

        hub_a, hub_b = a.app[HUB], b.app[HUB]  # type: ignore[index]
        await hub_a.send_group("room", "after the garbage")
        assert await local.receive_str(timeout=5) == "after the garbage"
        assert await remote.receive_str(timeout=5) == "after the garbage"
        # b heard the garbage before "after"; a's own listener may still be at it.
        await wait_until(
            lambda: hub_a.backend.dropped == hub_b.backend.dropped == len(GARBAGE),
            timeout=5,
            message="both replicas to count every dropped message",
        )
        assert hub_a.backend.healthy and hub_b.backend.healthy
        dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 2, caplog.text  # rate-limited: one line per replica
        assert all("\n" not in r.getMessage() and r.exc_info is None for r in dropped)
        assert f"{len(GARBAGE) - 1} dropped so far" not in caplog.text
        await local.close()
        await remote.close()


def test_a_deeply_nested_envelope_is_rejected_without_recursion() -> None:
    started = time.monotonic()
    for data in GARBAGE:
        with pytest.raises(ValueError):
            Envelope.loads(data)
    assert time.monotonic() - started < 1.0
    envelope = Envelope("group", 'r[o]{o}"m\\', "[[[ ünïcode\n", "hub")
    assert Envelope.loads(envelope.dumps().encode()) == envelope


# A hung Redis ---------------------------------------------------------------------


async def test_hung_redis_publish_is_bounded_and_health_follows(
    redis_server: RedisServer, replicas: Any, wait_until: WaitUntil
) -> None:
    a, b = await replicas("a"), await replicas("b")
    await publish(a, "before")
    assert await b.next_text() == "before"

    redis_server.pause()
    paused = time.monotonic()
    try:
        started = time.monotonic()
        burst = [publish(a, f"during {n}") for n in range(200)]
        results = await asyncio.gather(*burst, return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, BroadcastUnavailable) for r in results), results[:3]
        assert elapsed < BROADCAST_TIMEOUT + 0.5, (
            f"a hung Redis held publishers for {elapsed:.1f} s"
        )

        # b never published: only its listener's PING can tell it Redis hangs.
        await wait_until(
            lambda: not (a.backend.healthy or b.backend.healthy),
            timeout=max(paused + 2.5 - time.monotonic(), 0.05),
            message="both replicas unhealthy within 2.5 s of the hang",
        )
        started = time.monotonic()  # known down: fail at once, nothing piles up
        for n in range(1000):
            with pytest.raises(BroadcastUnavailable, match="cannot publish to redis://"):
                await publish(a, f"fast {n}")
        assert time.monotonic() - started < 0.5
    finally:
        redis_server.resume()

    await wait_until(
        lambda: a.backend.healthy and b.backend.healthy,
        timeout=3,
        message="both listeners back after SIGCONT",
    )
    await publish(a, "after")
    assert await b.next_text() == "after"


# A restarted Redis --------------------------------------------------------------


async def test_restarted_redis_is_listened_to_again_within_a_second_or_so(
    redis_server: RedisServer, replicas: Any, wait_until: WaitUntil
) -> None:
    a, b = await replicas("a"), await replicas("b")
    redis_server.kill()
    await wait_until(
        lambda: not (a.backend.healthy or b.backend.healthy),
        timeout=3,
        message="both listeners to notice Redis is gone",
    )
    with pytest.raises(BroadcastUnavailable):
        await publish(a, "during")
    await asyncio.sleep(3)  # long enough for any backoff to have grown to its ceiling

    await asyncio.to_thread(redis_server.start)
    restarted = time.monotonic()
    for backend in (a.backend, b.backend):
        await asyncio.wait_for(backend.ready.wait(), timeout=5)
    assert time.monotonic() - restarted < 1.5
    await publish(a, "after")
    assert await b.next_text() == "after"


async def test_publish_before_the_other_replica_is_back_is_incomplete(
    redis_server: RedisServer, replicas: Any, wait_until: WaitUntil
) -> None:
    a = await replicas("a")
    b = await replicas("b")
    await wait_until(lambda: a.backend.others == {"b"}, timeout=3, message="a to know of b")
    await publish(a, "before")
    assert await b.next_text() == "before"

    # b is slow to come back: its listener waits for the gate before it reconnects
    # (deterministic, where a long backoff would race a loaded machine's Redis restart).
    gate = asyncio.Event()
    listen = b.backend._listen

    async def gated(deliver: Any) -> None:
        await gate.wait()
        await listen(deliver)

    b.backend._listen = gated  # type: ignore[method-assign]
    redis_server.kill()
    await wait_until(
        lambda: not (a.backend.healthy or b.backend.healthy),
        timeout=3,
        message="both listeners to notice Redis is gone",
    )
    await asyncio.to_thread(redis_server.start)  # empty: the registry is gone too
    await asyncio.wait_for(a.backend.ready.wait(), timeout=3)
    assert not b.backend.healthy
    with pytest.raises(BroadcastIncomplete, match="this replica and 0 of 1 other replicas"):
        await publish(a, "lost on b")

    gate.set()
    await asyncio.wait_for(b.backend.ready.wait(), timeout=5)
    await publish(a, "after")
    assert await b.next_text() == "after"  # "lost on b" was indeed lost, and said so

    await wait_until(lambda: a.backend.others == {"b"}, timeout=3, message="a to see b again")
    await b.backend.close()
    await publish(a, "alone")  # b left the registry: it is not missing


# The listener itself failing ----------------------------------------------------


async def test_listener_restarts_after_an_unexpected_exception(
    replicas: Any, caplog: pytest.LogCaptureFixture, wait_until: WaitUntil
) -> None:
    caplog.set_level(logging.ERROR, logger="tranzit")
    a, b = await replicas("a"), await replicas("b", fail_once=True)
    await publish(a, "first")
    await wait_until(
        lambda: "RuntimeError: a bug in deliver" in caplog.text,
        timeout=3,
        message="the listener's failure to be logged",
    )
    failed = [r for r in caplog.records if "RuntimeError" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
    await wait_until(lambda: b.backend.healthy, timeout=3, message="the listener to restart")
    await publish(a, "second")
    assert await b.next_text() == "second"


# Helpers: the chat fixture served for real, as in test_hub.py ---------------------------


Client = TestClient[Any, Any]


async def chat_replica(stack: AsyncExitStack, url: str) -> Client:
    client: Client = await served_replica(stack, CHAT, url)
    return client


async def joined(client: Client, group: str) -> ClientWebSocketResponse:
    ws = await client.ws_connect("/ws")
    await ws.send_str(f"join|{group}")
    assert await ws.receive_str(timeout=5) == f"join|joined {group}"
    return ws


async def test_a_replica_reconnects_even_if_a_command_swallows_its_cancellation(
    redis_server: RedisServer, replicas: Any, wait_until: WaitUntil
) -> None:
    """redis-py may turn the cancellation of a running command into a ConnectionError.
    The listener's helper tasks must still end (or be left behind), or the replica
    would never reconnect: deaf for good after one Redis restart."""
    import redis

    a, b = await replicas("a"), await replicas("b")
    register = b.backend._register

    async def swallowing() -> None:
        try:
            await asyncio.sleep(30)  # a command hanging on a dead link
        except asyncio.CancelledError:
            raise redis.ConnectionError("Connection closed by server.") from None
        await register()

    b.backend._register = swallowing  # type: ignore[method-assign]
    await asyncio.sleep(1.5)  # the registry task is inside the "command" now
    redis_server.kill()
    await wait_until(lambda: not b.backend.healthy, timeout=3, message="b to notice")
    b.backend._register = register  # type: ignore[method-assign]
    await asyncio.to_thread(redis_server.start)
    await asyncio.wait_for(b.backend.ready.wait(), timeout=8)
    await wait_until(
        lambda: a.backend.healthy and a.backend.others == {"b"}, timeout=5, message="a back"
    )
    await publish(a, "heard")
    assert await b.next_text() == "heard"
