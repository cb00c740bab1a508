"""Three ws replicas and Redis behind nginx: groups and broadcast across replicas.

The template's chat (rules ``join`` and ``say``) on the compose profile "scale"
with ``--scale ws=3``; every client goes through nginx's /ws. The tests share
one stack and run in file order: the last one kills a replica.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio
from dockerstack import (
    CURRENT_STACK,
    BuiltProject,
    ChatClient,
    Stack,
    connect_chat,
    misheard,
    record,
    remove_compose_project,
    run,
    settle,
    until_everyone_hears,
)
from support import free_port

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
    }
    stack = Stack(
        built_project.root, f"{built_project.name}c", built_project.compose_cmd, env, port
    )
    CURRENT_STACK.append(stack)
    try:
        started = time.monotonic()
        stack.compose(
            "up", "-d", "--wait", "--wait-timeout", "180", "--pull", "never",
            "--scale", f"ws={REPLICAS}", timeout=300,
        )  # fmt: skip
        record("up -d --wait (redis + ws=3)", time.monotonic() - started)
        yield stack
    finally:
        try:
            remove_compose_project(stack)
        finally:
            CURRENT_STACK.remove(stack)


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
