"""Processes of a run: pinned servers and clients, their CPU time and memory.

Every process started here is in its own process group and is registered, so
``stop_all()`` (run on exit, on Ctrl-C and on SIGTERM) ends them all.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
CLIENT_CPU = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_live: list[subprocess.Popen[bytes]] = []
_logs = Path(tempfile.mkdtemp(prefix="tranzit-bench-"))


class BenchError(RuntimeError):
    """A server or client did not behave; the message says which and how."""


def pinning_available() -> bool:
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        return False
    return shutil.which("taskset") is not None and {SERVER_CPU, CLIENT_CPU} <= cpus


def raise_nofile(wanted: int) -> int:
    """Raise the open-files limit (inherited by children) to ``wanted``, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_env(extra: Mapping[str, str] = (), *, tranzit_path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANZIT_", "GUNICORN_"))}
    paths = [str(ROOT)]
    if tranzit_path:
        paths.insert(0, tranzit_path)  # an experimental copy of tranzit/ wins
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("WEB_CONCURRENCY", None)
    env.update(extra)
    return env


def spawn(
    argv: Sequence[str],
    *,
    cpu: int,
    name: str,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.DEVNULL,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` pinned to ``cpu`` (when pinning is available); stderr goes to a log file.

    ``cwd`` defaults to the repository (``python -m`` puts it first on ``sys.path``);
    an experimental copy of tranzit runs from its own directory instead.
    """
    cmd = list(argv)
    if pinning_available():
        cmd = ["taskset", "-c", str(cpu), *cmd]
    log = open(_logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        cmd,
        cwd=cwd or ROOT,
        env=dict(env) if env is not None else bench_env(),
        stdin=stdin,
        stdout=stdout,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    proc.bench_name = name  # type: ignore[attr-defined]
    _live.append(proc)
    return proc


def log_tail(proc: subprocess.Popen[bytes], lines: int = 15) -> str:
    path = _logs / f"{getattr(proc, 'bench_name', proc.pid)}.log"
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def log_text(name: str) -> str:
    """All that the process spawned as ``name`` wrote to stderr."""
    with contextlib.suppress(OSError):
        return (_logs / f"{name}.log").read_text(errors="replace")
    return ""


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout``."""
    if proc in _live:
        _live.remove(proc)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Children left in the group (gunicorn workers) go too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_many(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 5.0) -> None:
    """Stop several processes at once: all get SIGTERM first, then each is waited for."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        stop(proc, timeout)


def stop_all() -> None:
    stop_many(list(_live), timeout=3.0)


def install_cleanup() -> None:
    atexit.register(stop_all)

    def on_term(signum: int, frame: object) -> None:
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)


def read_event(client: subprocess.Popen[bytes], until: str, timeout: float) -> dict[str, Any]:
    """Read the client's JSON lines until one has ``event == until`` (or ``until`` as a key).

    The deadline holds even when the client goes quiet in the middle of a line:
    stdout is read with ``select`` and ``os.read``, never a blocking ``readline``.
    """
    assert client.stdout is not None
    name = client.bench_name  # type: ignore[attr-defined]
    fd = client.stdout.fileno()
    buffer: bytearray = client.__dict__.setdefault("bench_buffer", bytearray())
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                data = json.loads(line)
                if data.get("event") == until or until in data:
                    return data  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"no {until!r} from {name} within {timeout:.0f} s:\n{log_tail(client)}"
                )
            if not selector.select(left):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                client.wait(5)
                raise BenchError(
                    f"{name} ended (exit {client.returncode}) before {until!r}:\n{log_tail(client)}"
                )
            buffer += chunk


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"{proc.bench_name} exited with {proc.returncode} before listening "  # type: ignore[attr-defined]
                f"on port {port}:\n{log_tail(proc)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"expected {proc.bench_name} on port {port} within {timeout:.0f} s")  # type: ignore[attr-defined]


def http(
    url: str, data: bytes | None = None, headers: Mapping[str, str] = ()
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=dict(headers))
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, dict(resp.headers), resp.read()


# -- /proc readings ------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces: fields start after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLK_TCK


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, KiB."""
    total = 0
    for one in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def core_ticks() -> dict[int, tuple[int, int, int]]:
    """Per CPU, from /proc/stat: (idle + iowait, steal, all) ticks."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in values]
            out[int(name[3:])] = (v[3] + v[4], v[7] if len(v) > 7 else 0, sum(v[:8]))
    return out


@dataclass
class CpuMeter:
    """CPU use of the server (its process tree) and the client over a window.

    Also the idle and steal share of both cores: on a shared VM, a process
    below 100 % with its core neither idle nor stolen lost the CPU to a neighbour.
    """

    server: int
    client: int
    _marks: list[tuple[float, float, float, dict[int, tuple[int, int, int]]]] = field(
        default_factory=list
    )

    def mark(self) -> None:
        self._marks.append(
            (
                time.monotonic(),
                cpu_seconds(tree(self.server)),
                cpu_seconds([self.client]),
                core_ticks(),
            )
        )

    def percent(self) -> dict[str, float]:
        """``server``/``client``: % of one core; ``coreN_idle``/``coreN_steal``: % of that core."""
        if len(self._marks) < 2:
            return {}
        (t0, s0, c0, k0), (t1, s1, c1, k1) = self._marks[0], self._marks[-1]
        wall = max(t1 - t0, 1e-9)
        out = {
            "server": round(100 * (s1 - s0) / wall, 1),
            "client": round(100 * (c1 - c0) / wall, 1),
        }
        for core, label in ((SERVER_CPU, "server_core"), (CLIENT_CPU, "client_core")):
            if core in k0 and core in k1:
                total = max(1, k1[core][2] - k0[core][2])
                out[f"{label}_idle"] = round(100 * (k1[core][0] - k0[core][0]) / total, 1)
                out[f"{label}_steal"] = round(100 * (k1[core][1] - k0[core][1]) / total, 1)
        return out
