"""Websocket workloads: pipelined echo, and fan-out to idle connections.

tranzit runs as its ``ws`` role (``python -m tranzit serve ws``, the
standalone websocket server on uvloop) with the bench project's rules
``echo`` and ``broadcast``; the peers are a raw aiohttp ``WebSocketResponse``
server and the ``websockets`` library's server, both on uvloop.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import proc
from ..settings import Settings

PROJECT = proc.ROOT / "bench" / "projects" / "benchsite"
ECHO_PEERS = ("tranzit", "tranzit 2018 handler", "aiohttp", "websockets")
#: The rule each echo peer is sent (the peers that are not tranzit echo any text).
ECHO_RULES = {"tranzit 2018 handler": "echo_2018"}
FANOUT_PEERS = ("tranzit", "aiohttp")


def start_server(peer: str, settings: Settings, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = proc.free_port()
    if peer.startswith("tranzit"):
        argv = [sys.executable, "-m", "tranzit", "serve", "ws", "--project", str(PROJECT)]
        tz = settings.tranzit_path if peer == "tranzit-patched" else None
        env = proc.bench_env({"TRANZIT_WS_PORT": str(port)}, tranzit_path=tz)
        cwd = tz
    else:
        module = {"aiohttp": "ws_aiohttp", "websockets": "ws_websockets"}[peer]
        argv = [sys.executable, "-m", f"bench.servers.{module}", str(port)]
        env, cwd = proc.bench_env(), None
    server = proc.spawn(argv, cpu=proc.SERVER_CPU, name=f"{name}-{peer}", env=env, cwd=cwd)
    proc.wait_port(port, server)
    return server, port


# -- echo -------------------------------------------------------------------------


def _echo_once(
    peer: str,
    port: int,
    server: subprocess.Popen[bytes],
    settings: Settings,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "bench.clients.ws_echo", f"ws://127.0.0.1:{port}/",
        "--connections", str(settings.ws_connections), "--depth", str(settings.ws_depth),
        "--warmup", str(warmup), "--duration", str(duration),
        "--rule", ECHO_RULES.get(peer, "echo"),
    ]  # fmt: skip
    client = proc.spawn(argv, cpu=proc.CLIENT_CPU, name="ws-echo-client", stdout=subprocess.PIPE)
    meter = proc.CpuMeter(server.pid, client.pid)
    try:
        assert client.stdout is not None
        proc.read_event(client, "start", warmup + 60)
        meter.mark()
        proc.read_event(client, "end", duration + 30)
        meter.mark()
        result = proc.read_event(client, "result", 60)["result"]
        client.wait(10)
    finally:
        proc.stop(client)
    result["cpu_percent"] = meter.percent()
    return result


def run_echo(settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    peers = (*ECHO_PEERS, "tranzit-patched") if settings.tranzit_path else ECHO_PEERS
    runs: dict[str, list[dict[str, Any]]] = {peer: [] for peer in peers}
    try:
        for peer in peers:
            servers[peer] = start_server(peer, settings, "ws-echo")
        for peer, (server, port) in servers.items():
            if not settings.quick:
                progress(f"warm-up {peer}")
                _echo_once(peer, port, server, settings, 0.2, settings.warmup)
        for rep in range(settings.repeats):
            for peer, (server, port) in servers.items():
                r = _echo_once(peer, port, server, settings, settings.warmup, settings.duration)
                if r["unexpected"] or not r["messages"]:
                    raise proc.BenchError(
                        f"{peer}: {r['unexpected']} replies were not the echo; {r}"
                    )
                runs[peer].append(r)
                progress(
                    f"run {rep + 1}/{settings.repeats} {peer}: {r['rate']:.0f} msg/s "
                    f"(cpu server {r['cpu_percent'].get('server')}%, "
                    f"client {r['cpu_percent'].get('client')}%)"
                )
    finally:
        proc.stop_many([server for server, _ in servers.values()])
    summary = {}
    for peer, rs in runs.items():
        summary[peer] = {
            "runs": rs,
            "rate": statistics.median(r["rate"] for r in rs),
            "latency_ms": {
                p: statistics.median(r["latency_ms"][p] for r in rs) for p in ("50", "99")
            },
            "cpu_percent": {
                s: statistics.median(r["cpu_percent"].get(s, float("nan")) for r in rs)
                for s in ("server", "client")
            },
            "errors": 0,
        }
    return {
        "peers": summary,
        "connections": settings.ws_connections,
        "depth": settings.ws_depth,
    }


# -- fan-out ------------------------------------------------------------------------


def _fanout_once(peer: str, n: int, settings: Settings) -> dict[str, Any]:
    server, port = start_server(peer, settings, f"fanout-{n}")
    argv = [
        sys.executable, "-m", "bench.clients.ws_fanout", f"ws://127.0.0.1:{port}/",
        "--connections", str(n), "--broadcasts", str(settings.broadcasts),
    ]  # fmt: skip
    client = proc.spawn(
        argv,
        cpu=proc.CLIENT_CPU,
        name="ws-fanout-client",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        proc.read_event(client, "baseline", 30)
        time.sleep(0.3)
        rss0 = proc.rss_kib(server.pid)
        client.stdin.write(b"go\n")
        client.stdin.flush()
        connected = proc.read_event(client, "connected", 180)
        time.sleep(1.0)  # let the last handshakes settle
        rss1 = proc.rss_kib(server.pid)
        client.stdin.write(b"go\n")
        client.stdin.flush()
        result = proc.read_event(client, "result", 60 + 30 * settings.broadcasts)["result"]
        # Again after the broadcasts: what delivery keeps per connection counts too
        # (tranzit: each connection's outbox and its task, made on first use).
        rss2 = proc.rss_kib(server.pid)
    finally:
        proc.stop_many([client, server])
    rounds = result["rounds"]
    loops = [r["server_loop_ms"] for r in rounds if r["server_loop_ms"] is not None]
    return {
        "connections": n,
        "connect_seconds": connected["seconds"],
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "rss_after_broadcasts_kib": rss2,
        "kib_per_connection": (max(rss1, rss2) - rss0) / n,
        "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
        "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
        "server_loop_ms": statistics.median(loops) if loops else None,
        "rounds": rounds,
    }


def run_fanout(settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    limit = proc.raise_nofile(max(settings.fanout_sizes) * 2 + 1024)
    sizes = [n for n in settings.fanout_sizes if n + 256 <= limit]
    skipped = [n for n in settings.fanout_sizes if n not in sizes]
    peers = FANOUT_PEERS
    table: dict[str, dict[str, Any]] = {peer: {} for peer in peers}
    for n in sizes:
        runs: dict[str, list[dict[str, Any]]] = {peer: [] for peer in peers}
        for rep in range(settings.fanout_repeats):
            for peer in peers:
                r = _fanout_once(peer, n, settings)
                runs[peer].append(r)
                progress(
                    f"{n} connections, run {rep + 1}/{settings.fanout_repeats} {peer}: "
                    f"{r['kib_per_connection']:.1f} KiB/conn, broadcast p50 {r['p50_ms']:.1f} ms "
                    f"p99 {r['p99_ms']:.1f} ms, server loop {r['server_loop_ms']} ms"
                )
        for peer, rs in runs.items():
            table[peer][str(n)] = {
                "runs": rs,
                "kib_per_connection": statistics.median(r["kib_per_connection"] for r in rs),
                "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                "server_loop_ms": statistics.median(r["server_loop_ms"] for r in rs),
            }
    return {"peers": table, "sizes": sizes, "skipped_sizes": skipped, "nofile_limit": limit}
