"""The template's compose.yaml on Docker Swarm: `docker stack deploy`, ws scaled to 3.

Single node: `docker swarm init --advertise-addr 127.0.0.1` when this engine is
not in a swarm yet (and `docker swarm leave --force` at the end, only then).
This kernel has no IPVS, so deploy/swarm/no-ipvs.yaml publishes nginx's port in
host mode and gives the services DNS round robin instead of virtual IPs; the
compose file itself keeps the defaults of a real cluster. Images are local:
`--resolve-image never`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from dockerstack import (
    IN_CI,
    REPO,
    BuiltProject,
    connect_chat,
    misheard,
    record,
    run,
    settle,
    until_everyone_hears,
)
from support import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

OVERRIDE = REPO / "deploy" / "swarm" / "no-ipvs.yaml"
CLIENTS = 30
MESSAGES = 10


def swarm_state() -> dict[str, object]:
    out = run(["docker", "info", "--format", "{{json .Swarm}}"], timeout=30).stdout
    return dict(json.loads(out))


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    state = swarm_state()
    initialised = False
    if state.get("LocalNodeState") != "active":
        proc = subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            reason = f"docker swarm init is impossible here: {proc.stderr.strip()}"
            if IN_CI:
                pytest.fail(reason)
            pytest.skip(reason)
        initialised = True
    elif not state.get("ControlAvailable"):
        pytest.skip("this engine is a Swarm worker, not a manager: it cannot deploy a stack")
    try:
        yield
    finally:
        if initialised:
            subprocess.run(
                ["docker", "swarm", "leave", "--force"], capture_output=True, timeout=120
            )


def service_replicas(stack: str) -> dict[str, str]:
    out = run(
        ["docker", "service", "ls", "--filter", f"label=com.docker.stack.namespace={stack}",
         "--format", "{{.Name}} {{.Replicas}}"],
        timeout=30,
    ).stdout  # fmt: skip
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def wait_converged(stack: str, want: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = service_replicas(stack)
        if all(seen.get(f"{stack}_{svc}", "").startswith(f"{n}/{n}") for svc, n in want.items()):
            return
        time.sleep(1)
    raise AssertionError(f"stack {stack} did not converge to {want}: {seen}")


def healthy_containers(service: str) -> list[dict[str, object]]:
    ids = run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"],
        timeout=30,
    ).stdout.split()
    if not ids:
        return []
    infos = json.loads(run(["docker", "inspect", *ids], timeout=30).stdout)
    return [i for i in infos if i["State"].get("Health", {}).get("Status") == "healthy"]


def wait_healthy(service: str, count: int, timeout: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    healthy: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        healthy = healthy_containers(service)
        if len(healthy) >= count:
            return healthy
        time.sleep(1)
    raise AssertionError(f"{service}: {len(healthy)} of {count} containers healthy")


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            error = exc
        time.sleep(1)
    raise AssertionError(f"{url} did not answer 200: {error}")


def stack_logs(stack: str) -> str:
    parts = []
    for name in service_replicas(stack):
        proc = subprocess.run(
            ["docker", "service", "logs", "--no-task-ids", "--tail", "60", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        parts.append(f"--- {name}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


def remove_stack(stack: str) -> None:
    subprocess.run(["docker", "stack", "rm", stack], capture_output=True, timeout=120)
    # The network goes once every container has stopped; wait so a following
    # `swarm leave` or test starts clean (bounded).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = subprocess.run(
            [
                "docker",
                "network",
                "ls",
                "-q",
                "--filter",
                f"label=com.docker.stack.namespace={stack}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        if not left:
            break
        time.sleep(1)
    # `stack rm` keeps the stack's named volumes (tls, letsencrypt, acme): they go
    # too, once the last task container that used them is gone (bounded).
    label = f"label=com.docker.stack.namespace={stack}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        volumes = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", label],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        if not volumes:
            return
        subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True, timeout=60)
        time.sleep(1)


@pytest.fixture(scope="module")
def deployed(swarm: None, built_project: BuiltProject) -> Iterator[tuple[str, int]]:
    stack = f"{built_project.name}s"
    port = free_port()
    env = {
        **built_project.env,
        "TRANZIT_BROADCAST_URL": "redis://redis:6379/0",
        # Swarm publishes on every address of the host (host mode: no host IP).
        "TRANZIT_PUBLISH_PORT": str(port),
        "TRANZIT_PUBLISH_HTTPS_PORT": str(free_port()),
        "TRANZIT_WS_REPLICAS": "1",
    }
    root: Path = built_project.root
    try:
        started = time.monotonic()
        run(
            ["docker", "stack", "deploy", "--resolve-image", "never", "--detach=true",
             "-c", "compose.yaml", "-c", str(OVERRIDE), stack],
            env=env, cwd=root, timeout=180,
        )  # fmt: skip
        wait_converged(stack, {"web": 1, "ws": 1, "nginx": 1, "redis": 1}, timeout=180)
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
        record("swarm: stack deploy until / answers through nginx", time.monotonic() - started)
        yield stack, port
    except BaseException:
        print(stack_logs(stack))
        raise
    finally:
        remove_stack(stack)


def test_stack_runs_with_rolling_update_settings(deployed: tuple[str, int]) -> None:
    stack, _ = deployed
    spec = json.loads(run(["docker", "service", "inspect", f"{stack}_ws"], timeout=30).stdout)[0]
    update = spec["Spec"]["UpdateConfig"]
    assert update["Parallelism"] == 1 and update["Order"] == "start-first", update
    assert update["FailureAction"] == "rollback", update
    task = spec["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert task["ReadOnly"] is True
    assert "TRANZIT_BROADCAST_URL=redis://redis:6379/0" in task["Env"]


async def test_scaled_ws_broadcast_reaches_every_client(deployed: tuple[str, int]) -> None:
    stack, port = deployed
    started = time.monotonic()
    await asyncio.to_thread(
        run, ["docker", "service", "scale", "--detach", f"{stack}_ws=3"], timeout=60
    )
    await asyncio.to_thread(wait_converged, stack, {"ws": 3}, 180)
    replicas = await asyncio.to_thread(wait_healthy, f"{stack}_ws", 3, 120)
    record("swarm: scale ws to 3 until healthy", time.monotonic() - started)
    hosts = {str(info["Config"]["Hostname"]) for info in replicas}  # type: ignore[index]
    # nginx re-resolves "ws" every 5 s: connect once it sees all three.
    await asyncio.sleep(6)

    async with aiohttp.ClientSession() as session:
        clients = await connect_chat(session, f"http://127.0.0.1:{port}/ws", CLIENTS, "lobby")
        try:
            spread = Counter(c.host for c in clients)
            record("swarm: clients per ws replica", str(sorted(spread.values())), "")
            assert set(spread) == hosts, (spread, hosts)
            speaker = clients[0]
            await until_everyone_hears(speaker, clients, "lobby", timeout=30)
            for n in range(MESSAGES):
                await speaker.ws.send_str(f"say|lobby,swarm {n}")
            await settle(clients, speaker.name, "swarm ", MESSAGES, timeout=20)
            wrong = misheard(clients, speaker.name, "swarm ", MESSAGES)
            assert not wrong, f"not exactly once and in order: {wrong}"
        finally:
            await asyncio.gather(*(c.close() for c in clients))
