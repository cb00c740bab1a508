"""Broadcast to N clients across 3 ws replicas through Redis (issue 7).

The bench project's stack on the compose profile "scale" with ``--scale ws=3``
and ``TRANZIT_BROADCAST_URL=redis://redis:6379/0``; every client connects
through nginx's ``/ws`` (its address on the compose network) and joins one
group (bench/clients/ws_chat.py, several processes). A speaker says
``--rounds`` timed messages (latency: its send to each client's receive),
spaced so each is delivered before the next, and a burst (messages/s
delivered to all clients). ``cores_busy``: cores each part kept busy
during the burst, until every client had it all.

nginx's ``worker_connections`` (TRANZIT_NGINX_WORKER_CONNECTIONS, 4096 in the
image) caps the clients: each proxied websocket holds two connections, and the
workers share nothing. ``raised`` runs set it higher, for sizes beyond that cap.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import proc
from ..settings import Settings
from . import docker

REPLICAS = 3
STOCK_CONNECTIONS = 4096
RAISED_CONNECTIONS = 16384
OVERRIDE = f"""\
services:
  nginx:
    environment:
      TRANZIT_NGINX_WORKER_CONNECTIONS: "{RAISED_CONNECTIONS}"
"""


def _raised_template(ctx: docker.Context) -> None:
    (ctx.root / "compose.bench.yaml").write_text(OVERRIDE)


def _complaints(stack: Any) -> str:
    """The warnings and errors of the stack's logs (why connections were refused)."""
    words = ("error", "warn", "alert", "crit", "refus", "limit", "too many")
    lines = [line for line in stack.logs().splitlines() if any(w in line.lower() for w in words)]
    return "\n".join(lines[-25:])


def _cpu(stack: Any, clients: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds used so far per compose service (replicas summed) and by the clients."""
    out = subprocess.run(
        ["docker", "ps", "--no-trunc", "--filter",
         f"label=com.docker.compose.project={stack.name}",
         "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}'],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    used: dict[str, float] = {}
    for cid, service in (line.split() for line in out.splitlines() if line.strip()):
        seconds = _container_cpu(cid)
        if seconds is not None:
            used[service] = used.get(service, 0.0) + seconds
    used["clients"] = proc.cpu_seconds([c.pid for c in clients])
    return used


def _container_cpu(cid: str) -> float | None:
    """A container's CPU seconds from its cgroup (v1 cgroupfs or v2 systemd layouts)."""
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
    v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat")
    try:
        if v1.exists():
            return int(v1.read_text()) / 1e9
        for line in v2.read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        pass
    return None


def _busy(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Cores each part kept busy between the two readings (the machine has 2)."""
    return {k: round((after[k] - before.get(k, 0.0)) / wall, 2) for k in after}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _once(
    ctx: docker.Context, n: int, raised: bool, settings: Settings, progress: Callable[[str], None]
) -> dict[str, Any]:
    extra = dict(docker.SCALE_ENV)
    if raised:
        _raised_template(ctx)
        extra["COMPOSE_FILE"] = "compose.yaml:compose.override.yaml:compose.bench.yaml"
    own = not settings.quick  # --quick shares the stack of the other Docker workloads
    stack = ctx.stack(f"b{n}{'r' if raised else ''}", extra) if own else None
    rounds, burst = (3, 5) if settings.quick else (10, 20)
    # Latency rounds far enough apart that each broadcast has been delivered to
    # everyone before the next (~20k deliveries/s here): a figure for one
    # broadcast on a quiet stack, not for a backlog. The burst measures the rate.
    pause = max(0.5, n / 4000)
    clients: list[subprocess.Popen[bytes]] = []
    try:
        if stack is None:
            stack = ctx.shared(settings, progress)
            up_s = ctx.started["up_wait_seconds"]
        else:
            progress(f"{n} clients{' (raised nginx limit)' if raised else ''}: compose up ws=3")
            up_s = docker.up(stack, "--scale", f"ws={REPLICAS}")
        # nginx's address on the compose network, not the published loopback port:
        # that one goes through docker-proxy, which holds ~3 descriptors per
        # connection and died at ~3,300 websockets here (dockerd inherits a
        # 20,000 nofile limit on this machine). Outside clients reach nginx by
        # DNAT, without docker-proxy, so this is also the path users take.
        (nginx,) = stack.containers("nginx")
        url = f"ws://{docker.container_ip(nginx)}:{docker.NGINX_PORT}/ws"
        per = max(1, settings.chat_per_process)
        shares = [min(per, n - i) for i in range(0, n, per)]
        for k, share in enumerate(shares):
            argv = [
                sys.executable, "-m", "bench.clients.ws_chat", url, "--connections", str(share),
                "--prefix", f"p{k}c", "--rounds", str(rounds), "--burst", str(burst),
            ]  # fmt: skip
            clients.append(
                proc.spawn(
                    argv,
                    cpu=proc.CLIENT_CPU,
                    name=f"ws-chat-{k}",
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
        speaker_argv = [
            sys.executable, "-m", "bench.clients.ws_chat", url, "--speaker",
            "--rounds", str(rounds), "--burst", str(burst), "--pause", str(pause),
        ]  # fmt: skip
        speaker = proc.spawn(
            speaker_argv,
            cpu=proc.CLIENT_CPU,
            name="ws-chat-speaker",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        clients.append(speaker)
        began = time.monotonic()
        hosts: dict[str, int] = {}
        for c in clients:
            assert c.stdout is not None
            joined = proc.read_event(c, "joined", 400)
            for host, count in joined["hosts"].items():
                hosts[host] = hosts.get(host, 0) + count
        connect_s = time.monotonic() - began
        progress(f"{n} clients joined in {connect_s:.1f} s, per replica {sorted(hosts.values())}")

        def tell(c: subprocess.Popen[bytes], line: str) -> None:
            assert c.stdin is not None
            c.stdin.write(line.encode() + b"\n")
            c.stdin.flush()

        tell(speaker, "warm")
        for c in clients[:-1]:
            assert c.stdout is not None
            proc.read_event(c, "warm", 200)
        tell(speaker, "go")
        assert speaker.stdout is not None
        proc.read_event(speaker, "bursting", 120 + rounds * pause)
        cpu_before, began_at = _cpu(stack, clients), time.monotonic()
        said = proc.read_event(speaker, "said", 60)
        incomplete = 0
        for c in clients[:-1]:
            assert c.stdout is not None
            done = proc.read_event(c, "complete", 200)
            incomplete += bool(done.get("incomplete"))
        busy = _busy(cpu_before, _cpu(stack, clients), time.monotonic() - began_at)
        results = []
        for c in clients:
            tell(c, "stop")
            assert c.stdout is not None
            results.append(proc.read_event(c, "result", 60)["result"])
    except proc.BenchError as exc:
        if stack is not None:
            raise proc.BenchError(f"{exc}\n--- containers said:\n{_complaints(stack)}") from exc
        raise
    finally:
        proc.stop_many(clients)
        if own and stack is not None:
            ctx.down(stack)
    listeners = [r for r in results if not r.get("speaker")]
    latency = [x for r in listeners for x in r["latency_s"]]
    received = sum(r["burst_received"] for r in listeners)
    last = max((r["burst_last"] for r in listeners if r["burst_last"]), default=None)
    span = (last - said["burst_began"]) if last else None
    return {
        "clients": n,
        "raised_nginx_limit": raised,
        "up_seconds": up_s,
        "connect_seconds": connect_s,
        "per_replica": sorted(hosts.values()),
        "rounds": rounds,
        "pause_seconds": pause,
        "cores_busy": busy,
        "burst": burst,
        "p50_ms": 1000 * _percentile(latency, 0.5) if latency else None,
        "p99_ms": 1000 * _percentile(latency, 0.99) if latency else None,
        "burst_deliveries": received,
        "burst_seconds": span,
        "deliveries_per_second": received / span if span else None,
        "published_per_second": burst / span if span else None,
        "missing": sum(r["missing"] for r in listeners),
        "incomplete_processes": incomplete,
    }


def _run(
    ctx: docker.Context, settings: Settings, progress: Callable[[str], None]
) -> dict[str, Any]:
    # Each client process raises its own limit for its share of the connections.
    limit = proc.raise_nofile(settings.chat_per_process + 1024)
    runs = []
    for n, raised in settings.chat_sizes:
        try:
            r = _once(ctx, n, raised, settings, progress)
        except proc.BenchError as exc:
            # A size the stack cannot hold (nginx's cap) is a finding, not the end of the run.
            progress(f"{n} clients failed: {str(exc).splitlines()[0]}")
            runs.append({"clients": n, "raised_nginx_limit": raised, "error": str(exc)[-2000:]})
            continue
        runs.append(r)
        progress(
            f"{n} clients on {REPLICAS} replicas: p50 {r['p50_ms']:.1f} ms, p99 "
            f"{r['p99_ms']:.1f} ms, {r['deliveries_per_second'] or 0:.0f} deliveries/s, "
            f"missing {r['missing']}"
        )
    return {
        "runs": runs,
        "replicas": REPLICAS,
        "nginx_worker_connections": STOCK_CONNECTIONS,
        "raised_worker_connections": RAISED_CONNECTIONS,
        "nofile_limit": limit,
        "clients_per_process": settings.chat_per_process,
    }


run = docker.guarded("broadcast", _run)
