"""Three ws replicas and Redis behind nginx: groups and broadcast across replicas.

The template's chat (rules ``join`` and ``say``) on the compose profile "scale"
with ``--scale ws=3``; every client goes through nginx's /ws. The tests share
one stack and run in file order: one kills a replica, the last one puts the
stack through three faults while protocol v2 clients and the page (tz.js in
Chromium) keep receiving: a killed replica, a Redis restart, a rolling restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from delivery import (
    ChatPage,
    Publisher,
    V2Client,
    Verdict,
    chat_page,
    expected_texts,
    group_of,
    peak_per_second,
    percentile,
    phase_verdicts,
    unlike,
)
from dockerstack import (
    BuiltProject,
    ChatClient,
    Stack,
    connect_chat,
    login,
    misheard,
    record,
    run,
    settle,
    tracked,
    until_everyone_hears,
    wait_healthy,
)
from support import CHROMIUM, CHROMIUM_ARGS, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

CLIENTS = 30
REPLICAS = 3
ROOM = "lobby"
MESSAGES = 20


@pytest.fixture(scope="module")
def scaled(built_project: BuiltProject) -> Iterator[Stack]:
    port = free_port()
    env = {
        **built_project.env,
        "COMPOSE_PROFILES": "scale",
        "TRANZIT_BROADCAST_URL": "redis://redis:6379/0",
        "TRANZIT_PUBLISH_PORT": f"127.0.0.1:{port}",
        "TRANZIT_PUBLISH_HTTPS_PORT": f"127.0.0.1:{free_port()}",
    }
    stack = Stack(
        built_project.root, f"{built_project.name}c", built_project.compose_cmd, env, port
    )
    with tracked(stack):
        started = time.monotonic()
        stack.compose(
            "up", "-d", "--wait", "--wait-timeout", "180", "--pull", "never",
            "--scale", f"ws={REPLICAS}", timeout=300,
        )  # fmt: skip
        record("up -d --wait (redis + ws=3)", time.monotonic() - started)
        yield stack


def hostnames(stack: Stack, service: str) -> dict[str, str]:
    """Container host name → container id, for each container of ``service``."""
    ids = stack.containers(service)
    out = run(["docker", "inspect", *ids], timeout=30).stdout
    return {info["Config"]["Hostname"]: info["Id"] for info in json.loads(out)}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clients(scaled: Stack) -> AsyncIterator[list[ChatClient]]:
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        joined = await connect_chat(session, f"{scaled.url}/ws", CLIENTS, ROOM)
        record(f"{CLIENTS} clients connected and joined through nginx", time.monotonic() - started)
        try:
            yield joined
        finally:
            await asyncio.gather(*(c.close() for c in joined))


def test_redis_service_hardened_and_private(scaled: Stack) -> None:
    (redis,) = scaled.containers("redis")
    info = json.loads(run(["docker", "inspect", redis], timeout=30).stdout)[0]
    assert info["State"]["Health"]["Status"] == "healthy"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["HostConfig"]["Memory"] == 128 * 1024 * 1024
    assert not info["HostConfig"]["PortBindings"], "redis must not publish a port"
    config = run(
        ["docker", "exec", redis, "redis-cli", "config", "get", "appendonly"], timeout=30
    ).stdout.split()
    assert config == ["appendonly", "no"]
    assert len(scaled.containers("ws")) == REPLICAS


@pytest.mark.asyncio(loop_scope="module")
async def test_clients_spread_over_every_replica(scaled: Stack, clients: list[ChatClient]) -> None:
    replicas = hostnames(scaled, "ws")
    spread = Counter(c.host for c in clients)
    record("clients per ws replica", str(sorted(spread.values())), "")
    # nginx resolves "ws" through Docker's DNS and picks among all its addresses.
    assert set(spread) == set(replicas), (spread, replicas)


@pytest.mark.asyncio(loop_scope="module")
async def test_one_broadcast_reaches_all_clients_once_in_order(clients: list[ChatClient]) -> None:
    speaker = clients[0]
    await until_everyone_hears(speaker, clients, ROOM, timeout=30)
    started = time.monotonic()
    for n in range(MESSAGES):
        await speaker.ws.send_str(f"say|{ROOM},round1 {n}")
    await settle(clients, speaker.name, "round1 ", MESSAGES, timeout=20)
    record(
        f"{MESSAGES} messages to {len(clients)} clients on 3 replicas", time.monotonic() - started
    )
    wrong = misheard(clients, speaker.name, "round1 ", MESSAGES)
    assert not wrong, f"not exactly once and in order: {wrong}"


@pytest.mark.asyncio(loop_scope="module")
async def test_killing_a_replica_drops_only_its_clients(
    scaled: Stack, clients: list[ChatClient]
) -> None:
    speaker = clients[0]
    replicas = hostnames(scaled, "ws")
    victim_host = next(c.host for c in clients if c.host != speaker.host)
    victims = [c for c in clients if c.host == victim_host]
    survivors = [c for c in clients if c.host != victim_host]
    assert not any(c.closed.is_set() for c in clients), "a client was closed before the kill"

    run(["docker", "kill", replicas[victim_host]], timeout=60)
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for c in victims)), 15)
    record("clients of a killed replica disconnected after", time.monotonic() - started)
    await asyncio.sleep(1)
    assert not [c.name for c in survivors if c.closed.is_set()], "a survivor was disconnected"

    for n in range(MESSAGES):
        await speaker.ws.send_str(f"say|{ROOM},round2 {n}")
    await settle(survivors, speaker.name, "round2 ", MESSAGES, timeout=20)
    wrong = misheard(survivors, speaker.name, "round2 ", MESSAGES)
    assert not wrong, f"survivors missed or repeated messages: {wrong}"
    assert not any(c.said(speaker.name, "round2 ") for c in victims)


# -- delivery across faults ---------------------------------------------------
# Rooms of the v2 clients; the page joins "lobby" (its app.js does).
ROOMS = ["lobby", "north", "south"]
V2_CLIENTS = 24
RATE = 20.0  # messages per second, over all rooms
PUBLISHER = "pub"
# The most a client waits after a 1001 "reconnect" (the server's drain spreads the
# closes; the client's jitter spreads the comebacks). Short, to keep the test short.
JITTER = 2.0


def rooms_of(i: int) -> list[str]:
    """Client i is in one room, every other client in a second one too."""
    first = ROOMS[i % len(ROOMS)]
    return [first, ROOMS[(i + 1) % len(ROOMS)]] if i % 2 == 0 else [first]


async def until(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float, what: str
) -> float:
    """Poll ``predicate`` until it holds; how long it took (AssertionError on timeout)."""
    started = time.monotonic()
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"after {timeout:.0f} s still not: {what}")
        await asyncio.sleep(0.2)


def caught_up(receivers: list[V2Client], publisher: Publisher, phase: str) -> bool:
    """Every receiver is connected and holds the last confirmed message of each of its rooms."""
    for room in ROOMS:
        confirmed = publisher.texts(room, phase, {"ok"})
        if not confirmed:
            continue
        for client in receivers:
            group = group_of(room)
            if group in client.delivered and (
                not client.ready.is_set()
                or confirmed[-1] not in client.said(group, PUBLISHER, phase)
            ):
                return False
    return True


async def page_caught_up(page: ChatPage, publisher: Publisher, phase: str) -> bool:
    confirmed = publisher.texts("lobby", phase, {"ok"})
    return not confirmed or confirmed[-1] in await page.said("lobby", PUBLISHER, phase)


@dataclass
class Phase:
    """What one fault did: verdicts per client and room, the page's, and when it ran."""

    name: str
    verdicts: dict[str, dict[str, Verdict]]
    page: Verdict
    since: float
    until: float

    def gaps(self, receivers: list[V2Client]) -> Counter[str]:
        return Counter(g.why for c in receivers for g in c.gaps if self.since <= g.at <= self.until)

    def recovery_times(self, receivers: list[V2Client]) -> list[float]:
        """Seconds from each lost connection to its resumed successor (tz.resume answered)."""
        return [
            r.recovered_at - r.closed_at
            for c in receivers
            for r in c.reconnects
            if self.since <= r.closed_at <= self.until and r.recovered_at is not None
        ]

    def connect_times(self, receivers: list[V2Client]) -> list[float]:
        """Seconds from each lost connection to the upgrade of its successor."""
        return [
            r.connected_at - r.closed_at
            for c in receivers
            for r in c.reconnects
            if self.since <= r.closed_at <= self.until and r.connected_at is not None
        ]

    def connects(self, receivers: list[V2Client]) -> list[float]:
        return [t for c in receivers for t in c.connects if self.since <= t <= self.until]

    def check(self, outcome: str) -> list[str]:
        """Who (the page included) did not have ``outcome`` in this phase, and what instead."""
        out = []
        if bad := unlike(self.verdicts, outcome):
            out.append(f"({self.name}) {outcome} expected; clients: {bad}")
        if self.page.outcome != outcome:
            out.append(f"({self.name}) {outcome} expected; the page: {self.page}")
        return out

    def outcomes(self) -> dict[str, int]:
        return dict(Counter(v.outcome for rooms in self.verdicts.values() for v in rooms.values()))


async def run_phase(
    receivers: list[V2Client],
    page: ChatPage,
    publisher: Publisher,
    phase: str,
    fault: Callable[[], Awaitable[None]],
) -> Phase:
    """Publish ``phase``'s messages through ``fault``, then until everyone is back and has them."""
    since = time.monotonic()
    await page.set_phase(phase)
    publisher.start(phase)
    await asyncio.sleep(2)
    await fault()
    await until(lambda: all(c.ready.is_set() for c in receivers), 60, f"{phase}: all reconnected")
    await asyncio.sleep(2)  # steady publishing with everyone back
    publisher.pause()
    # Bounded; if someone never catches up, the verdicts say who misses what.
    with contextlib.suppress(AssertionError):
        await until(lambda: caught_up(receivers, publisher, phase), 20, f"{phase}: caught up")
    with contextlib.suppress(AssertionError):
        await until(lambda: page_caught_up(page, publisher, phase), 10, f"{phase}: page")
    await asyncio.sleep(0.5)  # time for a duplicate to show up
    until_ = time.monotonic()
    expected = expected_texts(receivers, publisher, "lobby", phase)
    return Phase(
        phase,
        phase_verdicts(receivers, publisher, phase, since, until_),
        await page.verdict("lobby", PUBLISHER, phase, expected),
        since,
        until_,
    )


def record_phase(
    label: str, result: Phase, receivers: list[V2Client], publisher: Publisher
) -> None:
    """Into the closing note: outcomes, how gaps were told, time from close to resumed."""
    record(f"{label}: outcomes (client x room)", str(result.outcomes()), "")
    said = [s for s in publisher.sent if s.text.startswith(result.name)]
    record(f"{label}: said, by status", str(dict(Counter(s.status for s in said))), "")
    if failed := [s.why for s in said if s.why]:
        record(f"{label}: first failed say", failed[0][:200], "")
    record(f"{label}: page", f"{result.page.outcome} {result.page.detail}"[:200], "")
    if told := result.gaps(receivers):
        record(f"{label}: gaps told by", str(dict(told)), "")
    resumed = Counter(
        str(value)
        for c in receivers for r in c.reconnects if result.since <= r.closed_at <= result.until
        for value in r.results.values()
    )  # fmt: skip
    if resumed:
        record(f"{label}: tz.resume results (per group)", str(dict(resumed)), "")
    if times := result.recovery_times(receivers):
        record(f"{label}: reconnects resumed", str(len(times)), "")
        record(f"{label}: close to resumed p50", percentile(times, 0.5))
        record(f"{label}: close to resumed p99", percentile(times, 0.99))
        upgraded = result.connect_times(receivers)
        record(f"{label}: close to upgraded p50", percentile(upgraded, 0.5))
        record(f"{label}: close to upgraded p99", percentile(upgraded, 0.99))


async def open_clients(session: aiohttp.ClientSession, base: str) -> list[V2Client]:
    """The v2 clients in their rooms, then the publisher (last) in all of them; started."""
    clients = []
    for i, rooms in [*((i, rooms_of(i)) for i in range(V2_CLIENTS)), (None, ROOMS)]:
        name = PUBLISHER if i is None else f"v{i}"
        headers = await login(session, base, name)
        clients.append(V2Client(session, f"{base}/ws", headers, name, rooms, jitter=JITTER))
    await asyncio.gather(*(c.start() for c in clients))
    return clients


@pytest.mark.asyncio(loop_scope="module")
async def test_delivery_across_faults(scaled: Stack) -> None:
    """Each client gets every message once, in order, or is told recovered:false.

    (a) ``docker kill`` of the page's replica: its clients resume elsewhere with
    nothing lost; (b) ``docker compose restart redis`` (no persistence): the history
    is gone, so every client is told of the gap and gets everything after it;
    (c) a rolling restart of every ws replica: drained clients resume, nothing lost.
    """
    # The replica killed by the test before is started again.
    await asyncio.to_thread(
        scaled.compose, "up", "-d", "--wait", "--wait-timeout", "120", "--no-recreate",
        "--pull", "never", "--scale", f"ws={REPLICAS}", timeout=180,
    )  # fmt: skip
    failures: list[str] = []
    async with (
        aiohttp.ClientSession() as session,
        chat_page(scaled.url, "browser", chromium=str(CHROMIUM), args=CHROMIUM_ARGS) as page,
    ):
        receivers = await open_clients(session, scaled.url)
        publisher = Publisher(receivers[-1], RATE)
        try:
            spread = Counter(c.host for c in receivers)
            record("delivery: v2 clients per ws replica", str(sorted(spread.values())), "")
            # Until every replica hears the others (each subscribes in the background).
            publisher.start("w")
            await until(lambda: caught_up(receivers, publisher, "w"), 30, "warm-up heard")
            publisher.pause()

            # (a) The page's replica is killed.
            replicas = hostnames(scaled, "ws")
            victims = [c for c in receivers if c.host == page.host]
            closes = (await page.probe())["closes"]

            async def kill() -> None:
                await page.mark("kill")
                killed_at = time.monotonic()
                await asyncio.to_thread(run, ["docker", "kill", replicas[page.host]], timeout=60)
                await until(
                    lambda: all(c.reconnects and c.reconnects[-1].closed_at > killed_at
                                for c in victims),
                    15, "every client of the killed replica cut off",
                )  # fmt: skip

            killed = await run_phase(receivers, page, publisher, "a", kill)
            record_phase("(a) kill", killed, receivers, publisher)
            failures += killed.check("exact")
            if moved := [c.name for c in receivers if c not in victims and c.reconnects]:
                failures.append(f"(a) clients of other replicas reconnected: {moved}")
            probe = await page.probe()
            record("(a) kill: page's recovery events", str(probe["recoveries"])[:300], "")
            if killed.page.outcome != "exact" or probe["closes"] == closes:
                # What its socket did, and what nginx logged of its upgrades (a request
                # is logged when it ends: one still waiting on an upstream is not).
                (nginx,) = scaled.containers("nginx")
                logs = run(["docker", "logs", nginx], timeout=30).stdout.splitlines()
                failures.append(
                    f"(a) page: socket events (ms) {probe['events']}, "
                    f"now {await page.socket_state()}; "
                    f"nginx: {[line for line in logs if 'Chrome' in line][-3:]}"
                )

            # (b) Redis restarts empty: the streams, and so the history, are gone.
            (redis,) = scaled.containers("redis")

            async def restart_redis() -> None:
                await asyncio.to_thread(scaled.compose, "restart", "redis", timeout=60)
                await asyncio.to_thread(wait_healthy, [redis], 30)
                back = time.monotonic()
                await until(
                    lambda: publisher.sent[-1].status == "ok" and publisher.sent[-1].at > back,
                    30, "publishing through Redis again",
                )  # fmt: skip

            lost = await run_phase(receivers, page, publisher, "b", restart_redis)
            record_phase("(b) redis restart", lost, receivers, publisher)
            failures += lost.check("gap told")

            # (c) Every ws replica restarted in turn, each healthy before the next.
            async def rolling_restart() -> None:
                for container in replicas.values():
                    await asyncio.to_thread(run, ["docker", "restart", container], timeout=90)
                    await asyncio.to_thread(wait_healthy, [container], 60)

            rolled = await run_phase(receivers, page, publisher, "c", rolling_restart)
            record_phase("(c) rolling restart", rolled, receivers, publisher)
            record("(c) rolling restart: whole phase", rolled.until - rolled.since)
            peak = peak_per_second(rolled.connects(receivers))
            record("(c) rolling restart: reconnects per second, peak", str(peak), "/s")
            why = Counter(
                f"{r.code} {r.reason}".strip()
                for c in receivers for r in c.reconnects if rolled.since <= r.closed_at
            )  # fmt: skip
            record("(c) rolling restart: close codes", str(dict(why)), "")
            failures += rolled.check("exact")

            dropped = sum(c.duplicates for c in receivers)
            record("delivery: duplicates dropped by position", str(dropped), "")
            if problems := {c.name: c.problems for c in receivers if c.problems}:
                failures.append(f"protocol breaches: {problems}")
            if page.errors:
                failures.append(f"page script errors: {page.errors}")
        finally:
            await publisher.stop()
            await asyncio.gather(*(c.stop() for c in receivers))
    assert not failures, "\n".join(failures)
