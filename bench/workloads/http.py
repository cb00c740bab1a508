"""HTTP hello (a class view) and JSON echo with a user middleware, under ``wrk``.

tranzit and plain aiohttp run under gunicorn with one aiohttp worker configured
by ``tranzit.gunicorn_conf`` (the uvloop worker); the third peer is uvicorn
(uvloop + httptools) with starlette.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import proc
from ..settings import Settings

POST_LUA = proc.ROOT / "bench" / "wrk" / "post_json.lua"
ECHO_BODY = re.search(r"wrk.body = '(.*)'", POST_LUA.read_text()).group(1)  # type: ignore[union-attr]

PEERS = ("tranzit", "aiohttp", "uvicorn+starlette")


def peers_of(settings: Settings) -> tuple[str, ...]:
    """``--tranzit-path`` (a patched copy of tranzit) is measured beside the installed one."""
    return (*PEERS, "tranzit-patched") if settings.tranzit_path else PEERS


def _argv(peer: str, variant: str, port: int) -> tuple[list[str], dict[str, str]]:
    if peer == "tranzit-patched":
        peer = "tranzit"
    if peer == "uvicorn+starlette":
        argv = [
            sys.executable, "-m", "uvicorn", f"bench.servers.starlette_http:{variant}_app",
            "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        return argv, {}
    module = "tranzit_http" if peer == "tranzit" else "aiohttp_http"
    argv = [
        sys.executable, "-m", "gunicorn", "--config", "python:tranzit.gunicorn_conf",
        # gunicorn 27's control socket has one default path: parallel masters would share it.
        "--no-control-socket", f"bench.servers.{module}:{variant}_app",
    ]  # fmt: skip
    env = {"WEB_CONCURRENCY": "1", "TRANZIT_HTTP_HOST": "127.0.0.1", "TRANZIT_HTTP_PORT": str(port),
           "TRANZIT_LOG_LEVEL": "warning"}  # fmt: skip
    return argv, env


def _check(peer: str, variant: str, port: int) -> None:
    """Each peer must answer the same bytes before it is measured."""
    base = f"http://127.0.0.1:{port}"
    if variant == "hello":
        status, _, body = proc.http(base + "/")
        if status != 200 or body != b"Hello, World!":
            raise proc.BenchError(
                f"{peer}: GET / expected 200 'Hello, World!', got {status} {body!r}"
            )
        return
    status, headers, body = proc.http(
        base + "/echo", ECHO_BODY.encode(), {"Content-Type": "application/json"}
    )
    if status != 200 or json.loads(body) != json.loads(ECHO_BODY):
        raise proc.BenchError(f"{peer}: POST /echo expected the body back, got {status} {body!r}")
    if headers.get("X-Bench-Middleware") != "1" and headers.get("x-bench-middleware") != "1":
        raise proc.BenchError(
            f"{peer}: POST /echo: expected the middleware's header, got {headers}"
        )


_NUM = r"([\d.]+)(us|ms|s)"
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise proc.BenchError(f"wrk printed no Requests/sec:\n{out}")
    latency = {
        p: float(v) * _UNIT[u]
        for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+" + _NUM, out, re.MULTILINE)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "latency_ms": latency,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def run_wrk(
    url: str, seconds: float, connections: int, server_pid: int, *extra: str
) -> dict[str, Any]:
    """wrk on the client core against ``url``; CPU of both sides sampled mid-run."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", *extra]
    client = proc.spawn([*argv, url], cpu=proc.CLIENT_CPU, name="wrk", stdout=proc.subprocess.PIPE)
    meter = proc.CpuMeter(server_pid, client.pid)
    try:
        time.sleep(0.2)
        meter.mark()
        time.sleep(max(0.1, round(seconds) - 0.4))
        meter.mark()
        out, _ = client.communicate(timeout=seconds + 30)
    finally:
        proc.stop(client)
    result = parse_wrk(out.decode())
    result["cpu_percent"] = meter.percent()
    return result


def _wrk(port: int, variant: str, seconds: float, connections: int, server: Any) -> dict[str, Any]:
    extra = ("-s", str(POST_LUA)) if variant == "echo" else ()
    url = f"http://127.0.0.1:{port}" + ("/echo" if variant == "echo" else "/")
    return run_wrk(url, seconds, connections, server.pid, *extra)


def run(settings: Settings, variant: str, progress: Callable[[str], None]) -> dict[str, Any]:
    """``variant`` is ``hello`` or ``echo``."""
    if shutil.which("wrk") is None:
        raise proc.BenchError("wrk is not installed (apt-get install -y wrk)")
    servers = {}
    try:
        for peer in peers_of(settings):
            port = proc.free_port()
            argv, extra = _argv(peer, variant, port)
            tz = settings.tranzit_path if peer == "tranzit-patched" else None
            env = proc.bench_env(extra, tranzit_path=tz)
            server = proc.spawn(
                argv, cpu=proc.SERVER_CPU, name=f"http-{variant}-{peer}", env=env, cwd=tz
            )
            servers[peer] = (server, port)
        for peer, (server, port) in servers.items():
            proc.wait_port(port, server)
            _check(peer, variant, port)
        runs: dict[str, list[dict[str, Any]]] = {peer: [] for peer in servers}
        for peer, (server, port) in servers.items():
            if not settings.quick:  # wrk runs whole seconds; --quick skips the warm-up
                progress(f"warm-up {peer}")
                _wrk(port, variant, max(1.0, settings.warmup), settings.http_connections, server)
        for rep in range(settings.repeats):
            for peer, (server, port) in servers.items():
                r = _wrk(port, variant, settings.duration, settings.http_connections, server)
                runs[peer].append(r)
                progress(
                    f"run {rep + 1}/{settings.repeats} {peer}: {r['rps']:.0f} req/s "
                    f"(cpu server {r['cpu_percent'].get('server')}%, "
                    f"client {r['cpu_percent'].get('client')}%)"
                )
    finally:
        proc.stop_many([server for server, _ in servers.values()])
    return {"peers": {peer: summarize(rs) for peer, rs in runs.items()}}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(get: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(get(r) for r in runs)

    return {
        "runs": runs,
        "rate": med(lambda r: r["rps"]),
        "latency_ms": {
            p: med(lambda r, p=p: r["latency_ms"].get(p, float("nan"))) for p in ("50", "99")
        },
        "cpu_percent": {
            s: med(lambda r, s=s: r["cpu_percent"].get(s, float("nan")))
            for s in ("server", "client")
        },
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
    }
