"""Recovery (issue 16): replicas that die or restart while v2 clients keep every message.

Three ``python -m tranzit serve ws`` replicas share a ``redis-server`` on
127.0.0.1 (history and positions on, the defaults). Members
(bench/clients/ws_recovery.py, several processes) speak protocol v2, each
joined to one of ``groups`` groups through the ``join`` rule of the project
this module writes (``conn.join(group)``); a publisher calls ``say`` (``hub.send_group``) at a
steady rate spread over the groups, on a replica that stays up.

1. **Kill**: one replica gets SIGKILL. Its members reconnect to the other two
   after a random 0..``JITTER`` s and send ``tz.resume`` with their last
   position and ticket. Measured: kill → recovery frame per member, messages
   replayed per second, Redis' and the load generator's CPU over the window.
2. **Rolling restart**: each replica in turn gets SIGTERM (it drains: 1001
   ``reconnect`` spread over ``ws_drain_time``), is started again and is
   ready (``/readyz``) before the next. Measured: reconnects per second.
   After each phase every member is checked against what the publisher was
   told ``ok`` for: every message, once, in order.
3. **Memory**: one replica, N idle v2 members joined with ``presence=True``
   (and, to compare, without): its RSS with them minus its RSS after one
   member came and went, over N.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import proc
from ..settings import Settings


@dataclasses.dataclass(frozen=True)
class Shape:
    clients: int
    groups: int
    rate: float  # the publisher's messages per second
    per_process: int  # members per client process
    memory_clients: int
    steady: float  # seconds of traffic before the kill (the CPU baseline)


FULL = Shape(
    clients=10_000, groups=100, rate=50.0, per_process=2500, memory_clients=5000, steady=5.0
)
QUICK = Shape(clients=60, groups=6, rate=20.0, per_process=30, memory_clients=50, steady=1.0)
REPLICAS = 3
#: Members' delay before reconnecting after a lost connection (tz.js: up to 2 s), and
#: after a drain (up to ``ws_drain_time``, which the servers run with).
JITTER = 2.0
DRAIN_TIME = 5.0
#: Most seconds the members may take to be back (each recovered, or told of a gap).
SETTLE = 90.0
#: Seconds after the jitter that count as the reconnect burst (its own CPU reading).
BURST = 2.0

ROUTES = """\
from tranzit.ws import BroadcastUnavailable


async def join(conn, group):
    conn.join(group)
    return "joined"


async def join_present(conn, group):
    conn.join(group, presence=True)
    return "joined"


async def say(conn, group, seq):
    try:
        await conn.hub.send_group(group, "m|" + seq)
    except BroadcastUnavailable as exc:
        return f"unavailable,{seq},{exc}"
    return f"ok,{seq}"


ws_rules = {"join": join, "join_present": join_present, "say": say}
"""


def _project() -> Path:
    """The bench's project for this workload: the rules above, one shared secret (tickets)."""
    root = Path(tempfile.mkdtemp(prefix="tranzit-bench-recovery-"))
    (root / "server.yml").write_text(
        "apps: [recovery]\nws_host: 127.0.0.1\nproduction: false\nlog_level: warning\n"
        "secret_key: bench-recovery-only-not-a-secret-0123456789\n"
    )
    app = root / "apps" / "recovery"
    app.mkdir(parents=True)
    (root / "apps" / "__init__.py").write_text("")
    (app / "__init__.py").write_text("")
    (app / "routes.py").write_text(textwrap.dedent(ROUTES))
    return root


def _redis(port: int) -> subprocess.Popen[bytes]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--maxclients", "20000"]  # fmt: skip
    server = proc.spawn(argv, cpu=proc.SERVER_CPU, name=f"recovery-redis-{port}")
    proc.wait_port(port, server)
    return server


def _replica(
    project: Path, port: int, redis_port: int, tranzit_path: str | None
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tranzit", "serve", "ws", "--project", str(project)]
    env = proc.bench_env({
        "TRANZIT_WS_PORT": str(port),
        "TRANZIT_BROADCAST_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TRANZIT_WS_DRAIN_TIME": str(DRAIN_TIME),
    }, tranzit_path=tranzit_path)  # fmt: skip
    name = f"recovery-ws-{port}-{time.monotonic():.0f}"
    server = proc.spawn(argv, cpu=proc.SERVER_CPU, name=name, env=env, cwd=tranzit_path)
    _ready(port, server)
    return server


def _ready(port: int, server: subprocess.Popen[bytes], timeout: float = 30.0) -> float:
    """Seconds until ``/readyz`` answered 200 (listening, and Redis reachable)."""
    began = time.monotonic()
    proc.wait_port(port, server, timeout)
    while time.monotonic() - began < timeout:
        try:
            if proc.http(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return time.monotonic() - began
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise proc.BenchError(f"replica on port {port} not ready within {timeout:.0f} s")


def _client(argv: list[str], name: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.clients.ws_recovery", *argv]
    return proc.spawn(
        argv, cpu=proc.CLIENT_CPU, name=name, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def _tell(client: subprocess.Popen[bytes], line: str) -> None:
    assert client.stdin is not None
    client.stdin.write(line.encode() + b"\n")
    client.stdin.flush()


def _members(
    ports: list[int], shape: Shape, n: int, rule: str, *, reconnect: bool = True,
    timeout: float = 300.0, concurrency: int = 100,
) -> list[subprocess.Popen[bytes]]:  # fmt: skip
    procs = []
    for first in range(0, n, shape.per_process):
        argv = ["members", ",".join(map(str, ports)), "--connections",
                str(min(shape.per_process, n - first)), "--first", str(first),
                "--groups", str(shape.groups), "--rule", rule, "--jitter", str(JITTER),
                "--drain-jitter", str(DRAIN_TIME), "--concurrency", str(concurrency)]  # fmt: skip
        if not reconnect:
            argv.append("--no-reconnect")
        procs.append(_client(argv, f"recovery-members-{rule}-{first}"))
    for c in procs:
        proc.read_event(c, "joined", timeout)
    return procs


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _ms(values: list[float]) -> dict[str, float | None]:
    p50, p99 = _percentile(values, 0.5), _percentile(values, 0.99)
    return {
        "p50_ms": None if p50 is None else round(1000 * p50, 1),
        "p99_ms": None if p99 is None else round(1000 * p99, 1),
        "max_ms": round(1000 * max(values), 1) if values else None,
    }


class Cpu:
    """CPU seconds of named process groups, and each core's idle share, since it was made."""

    def __init__(self, parts: dict[str, list[int]]) -> None:
        self.parts = parts
        self.at = time.monotonic()
        self.used = {k: proc.cpu_seconds(v) for k, v in parts.items()}
        self.ticks = proc.core_ticks()

    def percent(self) -> dict[str, float]:
        """% of one core per part (pids that died count no more); ``coreN_idle``: % idle."""
        wall = max(1e-9, time.monotonic() - self.at)
        now = {k: proc.cpu_seconds(v) for k, v in self.parts.items()}
        out = {k: round(100 * (now[k] - self.used[k]) / wall, 1) for k in now}
        for core, (idle, _, total) in proc.core_ticks().items():
            if core in self.ticks:
                before = self.ticks[core]
                share = (idle - before[0]) / max(1, total - before[2])
                out[f"core{core}_idle"] = round(100 * share, 1)
        return out


class Stack:
    """The redis-server, the replicas by port, the members and the publisher."""

    def __init__(self, project: Path, shape: Shape, tranzit_path: str | None) -> None:
        self.project, self.shape, self.tranzit_path = project, shape, tranzit_path
        self.redis_port = proc.free_port()
        self.redis = _redis(self.redis_port)
        self.ports = [proc.free_port() for _ in range(REPLICAS)]
        self.servers = {p: self.replica(p) for p in self.ports}
        self.members: list[subprocess.Popen[bytes]] = []
        self.publisher: subprocess.Popen[bytes] | None = None

    def cpu(self, *, replicas: bool = True) -> Cpu:
        """A CPU meter; ``replicas``: the replicas running now too (not across restarts)."""
        assert self.publisher is not None
        parts = {
            "redis": [self.redis.pid],
            "members": [c.pid for c in self.members],
            "publisher": [self.publisher.pid],
        }
        if replicas:
            parts["replicas"] = [pid for s in self.servers.values() for pid in proc.tree(s.pid)]
        return Cpu(parts)

    def replica(self, port: int) -> subprocess.Popen[bytes]:
        return _replica(self.project, port, self.redis_port, self.tranzit_path)

    def settle(self, timeout: float) -> float:
        """Wait until no member is down or waiting for its recovery frame; the seconds left."""
        deadline = time.monotonic() + timeout
        while True:
            down = 0
            for c in self.members:
                _tell(c, "pending")
                down += proc.read_event(c, "pending", 30)["down"]
            left = deadline - time.monotonic()
            if not down or left <= 0:
                return left
            time.sleep(0.5)

    def use(self, port: int) -> None:
        assert self.publisher is not None
        _tell(self.publisher, f"use {port}")
        proc.read_event(self.publisher, "using", 30)

    def check(self) -> dict[str, Any]:
        """Pause the publisher, let the last messages arrive, check every member."""
        assert self.publisher is not None
        _tell(self.publisher, "pause")
        acks = proc.read_event(self.publisher, "paused", 60)
        time.sleep(1.5)
        line = json.dumps({"ok": acks["ok"], "maybe": acks["maybe"]})
        totals: Counter[str] = Counter()
        examples: list[Any] = []
        for c in self.members:
            _tell(c, f"check {line}")
            got = proc.read_event(c, "checked", 120)
            examples += got.pop("examples")
            totals.update({k: v for k, v in got.items() if isinstance(v, int)})
        return {
            "acknowledged": len(acks["ok"]),
            "maybe": len(acks["maybe"]),
            "publisher_errors": acks["errors"],
            **totals,
            "examples": examples[:5],
        }

    def reconnects(self) -> tuple[list[list[Any]], dict[str, int]]:
        """Every member's reconnects so far, and why members' tasks failed (if any did)."""
        records: list[list[Any]] = []
        failed: Counter[str] = Counter()
        for c in self.members:
            _tell(c, "report")
            got = proc.read_event(c, "report", 120)
            records += got["reconnects"]
            failed.update(got["errors"])
        return records, dict(failed)

    def all(self) -> list[subprocess.Popen[bytes]]:
        extra = [self.publisher] if self.publisher else []
        return [*self.members, *extra, *self.servers.values(), self.redis]


# A reconnect record (bench/clients/ws_recovery.py): index, closed, code, reason, opened,
# recovery frame at, recovered, replayed, msgs before the recovery frame, result, attempts.
CLOSED, CODE, REASON, OPENED, RECOVERY, RECOVERED, REPLAYED, SEEN, RESULT, ATTEMPTS = range(1, 11)


def _buckets(times: list[float], start: float) -> list[int]:
    """How many of ``times`` fell in each second after ``start``."""
    counts = Counter(int(t - start) for t in times if t >= start)
    return [counts.get(s, 0) for s in range(max(counts, default=-1) + 1)]


def _outcomes(records: list[list[Any]]) -> dict[str, Any]:
    return {
        "reconnects": len(records),
        "recovered_true": sum(1 for r in records if r[RECOVERED] is True),
        "recovered_false": sum(1 for r in records if r[RECOVERED] is False),
        "no_recovery_frame": sum(1 for r in records if r[RECOVERY] is None),
        "resume_results": dict(Counter(json.dumps(r[RESULT]) for r in records).most_common(5)),
        "close_codes": dict(Counter(f"{r[CODE]} {r[REASON]}".strip() for r in records)),
        "replayed": sum(r[REPLAYED] or 0 for r in records),
        "replayed_frames_seen": sum(r[SEEN] for r in records),
        "most_attempts": max((r[ATTEMPTS] for r in records), default=0),
        "resume_round_trip": _ms([r[RECOVERY] - r[OPENED] for r in records if r[RECOVERY]]),
    }


def _kill(stack: Stack, progress: Callable[[str], None]) -> dict[str, Any]:
    victim = stack.ports[0]
    before = stack.cpu()
    time.sleep(stack.shape.steady)
    steady = before.percent()
    server = stack.servers.pop(victim)
    cpu, burst = stack.cpu(), stack.cpu()  # the two replicas that stay
    killed = time.monotonic()
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(5)
    progress(f"replica {victim} killed; waiting up to {SETTLE:.0f} s for its members")
    time.sleep(JITTER + BURST)
    in_burst = burst.percent()
    settled = stack.settle(SETTLE - JITTER - BURST) > 0
    window_s = time.monotonic() - killed
    window = cpu.percent()
    check = stack.check()
    records, failed = stack.reconnects()
    mine = [r for r in records if r[CLOSED] >= killed]
    recovered = [r[RECOVERY] - killed for r in mine if r[RECOVERY] is not None]
    last = max((r[RECOVERY] for r in mine if r[RECOVERY]), default=None)
    replayed = sum(r[REPLAYED] or 0 for r in mine)
    result = {
        "killed_port": victim,
        "all_back_within_window": settled,
        "kill_to_connected": _ms([r[OPENED] - killed for r in mine]),
        "kill_to_recovery": _ms(recovered),
        "recovery_frames_per_second": _buckets([r[RECOVERY] for r in mine if r[RECOVERY]], killed),
        "last_recovery_s": None if last is None else round(last - killed, 2),
        "replayed_per_second": round(replayed / (last - killed), 1) if last else None,
        **_outcomes(mine),
        "failed_members": failed,
        "cpu_percent_steady": steady,
        "cpu_percent_window": window,
        "window_s": round(window_s, 1),
        "cpu_percent_burst": in_burst,
        "burst_s": JITTER + BURST,
        "check": check,
    }
    progress(
        f"kill: {result['recovered_true']}/{len(mine)} recovered, kill→recovery "
        f"{result['kill_to_recovery']}, {result['replayed_per_second']} replayed/s, "
        f"missing {check['missing']}, duplicates {check['duplicates']}, CPU {window}"
    )
    return result


def _rolling(stack: Stack, progress: Callable[[str], None]) -> dict[str, Any]:
    victim = stack.ports[0]
    stack.servers[victim] = stack.replica(victim)
    began = time.monotonic()
    assert stack.publisher is not None
    _tell(stack.publisher, "resume")
    proc.read_event(stack.publisher, "resumed", 10)
    cpu = stack.cpu(replicas=False)
    steps = []
    for port in stack.ports:
        stack.use(next(p for p in stack.ports if p != port))
        time.sleep(1.0)  # the publisher's replies on the old connection are in
        server = stack.servers.pop(port)
        t0 = time.monotonic()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(DRAIN_TIME + 20)
        except subprocess.TimeoutExpired as exc:
            raise proc.BenchError(f"replica {port} still running after SIGTERM") from exc
        stopped = time.monotonic() - t0
        t1 = time.monotonic()
        stack.servers[port] = stack.replica(port)
        steps.append({
            "port": port, "stop_s": round(stopped, 2), "ready_s": round(time.monotonic() - t1, 2),
        })  # fmt: skip
        progress(f"replica {port}: stopped in {stopped:.1f} s, ready again")
        time.sleep(1.0)
    time.sleep(DRAIN_TIME)  # the last drained members are back
    stack.settle(SETTLE)
    window = cpu.percent()
    check = stack.check()
    records, failed = stack.reconnects()
    mine = [r for r in records if r[CLOSED] >= began]
    per_second = _buckets([r[OPENED] for r in mine], began)
    result = {
        "steps": steps,
        "peak_reconnects_per_second": max(per_second, default=0),
        "reconnects_per_second": per_second,
        **_outcomes(mine),
        "close_to_recovery": _ms([r[RECOVERY] - r[CLOSED] for r in mine if r[RECOVERY]]),
        "failed_members": failed,
        "cpu_percent_window": window,
        "check": check,
    }
    progress(
        f"rolling: peak {result['peak_reconnects_per_second']} reconnects/s, "
        f"{result['recovered_true']}/{len(mine)} recovered, missing {check['missing']}, "
        f"duplicates {check['duplicates']}, close codes {result['close_codes']}"
    )
    return result


def _memory(project: Path, shape: Shape, rule: str, tranzit_path: str | None) -> dict[str, Any]:
    """RSS per idle v2 member of one replica (``rule``: how they join)."""
    redis_port, port = proc.free_port(), proc.free_port()
    redis = _redis(redis_port)
    server = _replica(project, port, redis_port, tranzit_path)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # One member first, gone before the baseline: what the first connection loads.
        warm = _members([port], dataclasses.replace(shape, per_process=1), 1, rule, reconnect=False)
        proc.stop_many(warm)
        time.sleep(1.0)
        base = proc.rss_kib(server.pid)
        n = shape.memory_clients
        # Joins 25 at a time per process: a burst of joins over redis-py's pool of 100
        # fails (the kill above measures that); this measures memory.
        procs = _members([port], shape, n, rule, reconnect=False, timeout=120, concurrency=25)
        time.sleep(3.0)  # presence writes and events settle
        loaded = proc.rss_kib(server.pid)
    finally:
        proc.stop_many([*procs, server, redis])
    return {
        "connections": n,
        "rule": rule,
        "rss_base_mib": round(base / 1024, 1),
        "rss_loaded_mib": round(loaded / 1024, 1),
        "kib_per_connection": round((loaded - base) / n, 1),
    }


def run(settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    shape = QUICK if settings.quick else FULL
    limit = proc.raise_nofile(20_000)
    project = _project()
    stack = Stack(project, shape, settings.tranzit_path)
    result: dict[str, Any] = {
        "clients": shape.clients, "groups": shape.groups, "rate": shape.rate,
        "replicas": REPLICAS, "jitter_s": JITTER, "drain_time_s": DRAIN_TIME,
        "clients_per_process": shape.per_process, "nofile_limit": limit,
    }  # fmt: skip
    try:
        began = time.monotonic()
        # 25 first joins at a time per process: more at once can exceed redis-py's pool
        # of 100 connections, and a v2 join whose look-up fails gets no joined frame.
        stack.members = _members(stack.ports, shape, shape.clients, "join", concurrency=25)
        progress(f"{shape.clients} members joined in {time.monotonic() - began:.1f} s")
        stack.publisher = _client(
            ["publisher", str(stack.ports[-1]), "--groups", str(shape.groups),
             "--rate", str(shape.rate)], "recovery-publisher",
        )  # fmt: skip
        proc.read_event(stack.publisher, "ready", 30)
        _tell(stack.publisher, "resume")
        proc.read_event(stack.publisher, "resumed", 10)
        result["kill"] = _kill(stack, progress)
        result["rolling"] = _rolling(stack, progress)
    finally:
        proc.stop_many(stack.all())
    result["memory"] = []
    for rule in ("join_present", "join"):
        try:
            m = _memory(project, shape, rule, settings.tranzit_path)
        except proc.BenchError as exc:  # members that never got their joined frame: a finding
            progress(f"memory ({rule}) failed: {str(exc).splitlines()[0]}")
            result["memory"].append({"rule": rule, "error": str(exc)[-1500:]})
            continue
        result["memory"].append(m)
        progress(f"memory ({rule}): {m['kib_per_connection']} KiB per idle connection")
    return result
