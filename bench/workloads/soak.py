"""The soak (issue 14): bad clients and a Redis that dies, while members keep receiving.

Two ws replicas of the bench project (``python -m tranzit serve ws``) share a
``redis-server`` on 127.0.0.1. The clients (bench/clients/ws_soak.py, one
process): members of one group on both replicas, a speaker on replica A
sending 20 numbered group messages a second, and three kinds of bad client —
ones that stop reading, ones that send junk, ones that never finish the
handshake. Redis is killed (SIGKILL) and restarted on the same port twice.

What is checked (``ok`` in the result):

* every member received every message the speaker was told ``ok`` for
  (delivered to every replica), in order, none twice;
* each server's RSS stayed under ``RSS_BOUND_MIB``;
* no cause was logged at ERROR more than once (causes: the message with its
  numbers and ids taken out).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .. import proc
from ..settings import Settings
from .ws import PROJECT

RSS_BOUND_MIB = 150
#: (good, stalled, garbage, half) clients; seconds; Redis outages as (down at, up at).
FULL_SHAPE = ((140, 20, 20, 20), 60.0, ((15.0, 20.0), (35.0, 40.0)))
QUICK_SHAPE = ((10, 2, 2, 2), 8.0, ((2.0, 3.0), (5.0, 6.0)))
#: The servers' timeouts, shortened so a bad client's fate shows within the soak.
SERVER_ENV = {"TRANZIT_HEADER_TIMEOUT": "5", "TRANZIT_WS_SEND_TIMEOUT": "5"}


def _redis(port: int) -> subprocess.Popen[bytes]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]  # fmt: skip
    server = proc.spawn(argv, cpu=proc.SERVER_CPU, name=f"soak-redis-{time.monotonic():.0f}")
    proc.wait_port(port, server)
    return server


def _replica(name: str, port: int, redis_port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tranzit", "serve", "ws", "--project", str(PROJECT)]
    env = proc.bench_env({
        "TRANZIT_WS_PORT": str(port),
        "TRANZIT_BROADCAST_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TRANZIT_LOG_LEVEL": "info",
        **SERVER_ENV,
    })  # fmt: skip
    server = proc.spawn(argv, cpu=proc.SERVER_CPU, name=name, env=env)
    proc.wait_port(port, server)
    return server


def _causes(log: str) -> Counter[str]:
    """ERROR lines, by cause: the text after the level, digits and hex ids taken out."""
    causes: Counter[str] = Counter()
    for line in log.splitlines():
        _, level, rest = line.partition(" ERROR ")
        if level:
            causes[re.sub(r"[0-9a-f]{6,}|\d+(\.\d+)?", "#", rest)[:160]] += 1
    return causes


def run(settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    counts, seconds, outages = QUICK_SHAPE if settings.quick else FULL_SHAPE
    good = counts[0]
    proc.raise_nofile(4096)
    redis_port, port_a, port_b = proc.free_port(), proc.free_port(), proc.free_port()
    redis = _redis(redis_port)
    names = (f"soak-a-{port_a}", f"soak-b-{port_b}")
    servers = [_replica(names[0], port_a, redis_port), _replica(names[1], port_b, redis_port)]
    argv = [sys.executable, "-m", "bench.clients.ws_soak", str(port_a), str(port_b),
            str(seconds), *map(str, counts)]  # fmt: skip
    client = proc.spawn(argv, cpu=proc.CLIENT_CPU, name="soak-clients", stdout=subprocess.PIPE)
    assert client.stdout is not None
    timeline: list[str] = []
    rss_max = [0, 0]
    try:
        proc.read_event(client, "started", 30)
        began = time.monotonic()
        events = sorted([(down, "down") for down, _ in outages] + [(up, "up") for _, up in outages])
        while client.poll() is None and time.monotonic() - began < seconds + 30:
            now = time.monotonic() - began
            while events and events[0][0] <= now:
                _, what = events.pop(0)
                if what == "down":
                    redis.send_signal(signal.SIGKILL)
                    redis.wait(5)
                else:
                    redis = _redis(redis_port)
                timeline.append(f"{now:.1f} s: Redis {what}")
                progress(timeline[-1])
            for i, server in enumerate(servers):
                rss_max[i] = max(rss_max[i], proc.rss_kib(server.pid))
            if now > seconds:
                break
            time.sleep(0.25)
        done = proc.read_event(client, "done", 60)
    finally:
        proc.stop(client)
        proc.stop_many([*servers, redis])
    logs = [proc.log_text(name) for name in names]
    ok = set(done["acks"].get("ok", []))
    unavailable = done["acks"].get("unavailable", [])
    missing = [len(ok - set(got)) for got in done["received"]]
    disordered = sum(1 for got in done["received"] if got != sorted(set(got)))
    causes = _causes(logs[0]) + _causes(logs[1])
    rss_mib = [round(kib / 1024, 1) for kib in rss_max]
    result = {
        "clients": dict(zip(("good", "stalled", "garbage", "half"), counts, strict=True)),
        "seconds": seconds,
        "timeline": timeline,
        "messages": len(ok) + len(unavailable),
        "acknowledged": len(ok),
        "unavailable": len(unavailable),
        "members_complete": sum(1 for m in missing if m == 0),
        "members": good,
        "most_missing": max(missing, default=0),
        "out_of_order": disordered,
        "member_ends": Counter(done["member_ends"]),
        "bad_clients": done["bad"],
        "rss_mib": dict(zip(("replica a", "replica b"), rss_mib, strict=True)),
        "rss_bound_mib": RSS_BOUND_MIB,
        "error_causes": dict(causes),
        "warning_lines": sum(log.count(" WARNING ") for log in logs),
    }
    result["ok"] = (
        result["members_complete"] == good
        and disordered == 0
        and max(rss_mib) < RSS_BOUND_MIB
        and all(n <= 1 for n in causes.values())
    )
    progress(
        f"{result['members_complete']}/{good} members complete, {len(ok)} acknowledged, "
        f"{len(unavailable)} unavailable, RSS {rss_mib} MiB, ERROR causes {dict(causes)}"
    )
    return result
