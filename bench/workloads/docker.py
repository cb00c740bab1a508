"""The Docker workloads: container lifecycle, static files through nginx.

A project is generated from the template (with two static files and the
bench's broadcast rules added), built on tranzit's images and run with
compose under unique names; everything made here is removed by ``cleanup()``.
The helpers of the stack tests (tests/docker/dockerstack.py) run the commands.

Images: the full run builds tranzit's runtime and nginx images and the
project's images with ``--no-cache`` (the cold build time). ``--quick`` reuses
tranzit's images when they are present (``ghcr.io/tranzit/*:<version>``, built
by scripts/up.sh or a test session) and builds the project with the layer cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import proc
from ..settings import Settings
from . import http

sys.path.insert(0, str(proc.ROOT / "tests" / "docker"))
try:
    import dockerstack as ds
except ImportError as exc:  # pytest or aiohttp missing: the workloads say so
    ds = None
    IMPORT_ERROR = f"tests/docker/dockerstack.py does not import: {exc}"
else:
    IMPORT_ERROR = ""

SMALL = "bench-small.txt"  # 1 KiB
LARGE = "bench-1m.bin"  # 1 MiB
STATIC_DIR = "common/static"
#: nginx's port inside its container: the image's TRANZIT_NGINX_PORT (BARE_CONF listens there too).
NGINX_PORT = 8080
BARE_CONF = """\
worker_processes auto;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    access_log off;
    client_body_temp_path /tmp/cb;
    proxy_temp_path /tmp/px;
    fastcgi_temp_path /tmp/fc;
    uwsgi_temp_path /tmp/uw;
    scgi_temp_path /tmp/sc;
    server {
        listen 8080;
        location /static/ { alias /srv/static/; }
    }
}
"""
# Rules for the broadcast bench, appended to the first app's routes.py.
BENCH_RULES = """

# --- added by tranzit's bench (bench/workloads/docker.py) ---
import socket as _bench_socket


async def _bench_join(conn, room):
    conn.join("bench:" + room)
    return f"{room},{conn.id},{_bench_socket.gethostname()}"


async def _bench_say(conn, room, text):
    await conn.hub.send_group("bench:" + room, f"chat|{room},speaker,{text}")


ws_rules["bench_join"] = _bench_join
ws_rules["bench_say"] = _bench_say
# The bench measures delivery, not the example's login: its clients connect without one.
ws_connect = None
"""


SCALE_ENV = {
    "COMPOSE_PROFILES": "scale",
    "TRANZIT_BROADCAST_URL": "redis://redis:6379/0",
    "TRANZIT_LOG_LEVEL": "warning",
}


class Unavailable(Exception):
    """No engine (or no helpers): the Docker workloads are not measured."""


@dataclass
class Context:
    """One generated project and its images, shared by the Docker workloads of a run."""

    compose: list[str]
    env: dict[str, str]
    root: Path
    name: str
    runtime_image: str
    nginx_image: str
    built_tranzit_images: bool
    builds: dict[str, float] = field(default_factory=dict)  # seconds, with "cold" flag below
    cold: bool = False
    stacks: list[Any] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    shared_stack: Any = None
    started: dict[str, Any] = field(default_factory=dict)  # how the shared stack came up
    # Images of the other projects a workload built (bench/workloads/secure.py).
    extra_images: list[str] = field(default_factory=list)

    @property
    def project_images(self) -> list[str]:
        return [f"{self.env['IMAGE_NAME']}:t", f"{self.env['IMAGE_NAME']}-nginx:t"]

    def stack(self, suffix: str, extra: dict[str, str]) -> Any:
        port = proc.free_port()
        # The bench reaches nginx and the replicas by their compose-network addresses too:
        # any Host is served (tests/test_hosts.py checks refusals in the apps).
        env = {
            **self.env,
            "TRANZIT_PUBLISH_PORT": f"127.0.0.1:{port}",
            "TRANZIT_PUBLISH_HTTPS_PORT": f"127.0.0.1:{proc.free_port()}",
            "TRANZIT_TLS": "off",
            "ALLOWED_HOSTS": "*",
            **extra,
        }
        stack = ds.Stack(self.root, f"{self.name}{suffix}", self.compose, env, port)
        self.stacks.append(stack)
        return stack

    def down(self, stack: Any) -> None:
        ds.remove_compose_project(stack)
        if stack in self.stacks:
            self.stacks.remove(stack)
        if stack is self.shared_stack:
            self.shared_stack = None

    def shared(self, settings: Settings, progress: Callable[[str], None]) -> Any:
        """The stack static and lifecycle use (and, in ``--quick``, broadcast too).

        Brought up once: the time of ``up --wait`` and of the first request after
        it are recorded then. ``--quick`` starts the compose profile "scale"
        with 3 ws replicas, so one stack serves all three Docker workloads.
        """
        if self.shared_stack is not None:
            return self.shared_stack
        extra, args, kind = {}, [], "web, ws, nginx"
        if settings.quick:
            extra, args = SCALE_ENV, ["--scale", "ws=3"]
            kind = "profile scale: web, 3 ws, redis, nginx"
        stack = self.stack("s", extra)
        progress(f"compose up --wait ({kind})")
        up_s = up(stack, *args)
        started = time.monotonic()
        status, _ = get(stack.url + "/")
        first = time.monotonic() - started
        if status != 200:
            raise proc.BenchError(f"first GET / after up: {status}")
        self.started = {"stack": kind, "up_wait_seconds": up_s, "first_request_seconds": first}
        progress(f"up --wait {up_s:.1f} s, first request {first * 1000:.0f} ms")
        self.shared_stack = stack
        return stack


_context: Context | None = None
_failure: str | None = None


def _engine_env() -> tuple[list[str], dict[str, str]]:
    if ds is None:
        raise Unavailable(IMPORT_ERROR)
    if shutil.which("docker") is None:
        raise Unavailable("no docker command on this machine")
    try:
        return ds.engine_env()
    except ds.NoEngine as exc:
        raise Unavailable(str(exc)) from exc


def _exists(image: str) -> bool:
    done = subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30)
    return done.returncode == 0


def _version() -> str:
    text = (proc.ROOT / "tranzit" / "__init__.py").read_text()
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    if found is None:
        raise proc.BenchError("tranzit/__init__.py names no __version__")
    return found.group(1)


def context(settings: Settings, progress: Callable[[str], None]) -> Context:
    """Build (once per run) tranzit's images if needed and the bench project."""
    global _context, _failure
    if _context is not None:
        return _context
    if _failure is not None:
        raise Unavailable(_failure)
    try:
        _context = _make_context(settings, progress)
    except Unavailable as exc:
        _failure = str(exc)
        raise
    return _context


def _make_context(settings: Settings, progress: Callable[[str], None]) -> Context:
    from cookiecutter.main import cookiecutter

    progress("engine and base images (scripts/docker-env.sh --env)")
    compose, env = _engine_env()
    tag = uuid.uuid4().hex[:8]
    version = _version()
    runtime, nginx = f"ghcr.io/tranzit/runtime:{version}", f"ghcr.io/tranzit/nginx:{version}"
    reuse = settings.quick and _exists(runtime) and _exists(nginx)
    if not reuse:
        runtime, nginx = f"tranzit-bench/runtime:{tag}", f"tranzit-bench/nginx:{tag}"
    env.update({"TRANZIT_RUNTIME_IMAGE": runtime, "TRANZIT_NGINX_IMAGE": nginx})
    out = Path(tempfile.mkdtemp(prefix="tranzit-bench-project-"))
    root = Path(cookiecutter(str(ds.TEMPLATE), no_input=True, output_dir=str(out)))
    static = root / STATIC_DIR
    static.mkdir(parents=True, exist_ok=True)
    (static / SMALL).write_bytes(b"x" * 1023 + b"\n")
    (static / LARGE).write_bytes(os.urandom(1 << 20))
    routes = next((root / "apps").glob("*/routes.py"))
    routes.write_text(routes.read_text() + BENCH_RULES)
    name = f"tzbench{tag}"
    env.update(
        {
            "IMAGE_NAME": f"tranzit-bench/{name}",
            "IMAGE_TAG": "t",
            "TRANZIT_SECRET_KEY": secrets.token_urlsafe(32),
        }
    )
    ctx = Context(compose, env, root, name, runtime, nginx, not reuse)
    global _context
    _context = ctx  # cleanup() removes what was made even if a build fails
    no_cache = [] if settings.quick else ["--no-cache"]
    ctx.cold = not settings.quick
    if not reuse:
        progress(f"building tranzit's runtime and nginx images {' '.join(no_cache)}")
        images = str(proc.ROOT / "docker" / "compose.images.yaml")
        started = time.monotonic()
        ds.run(
            [*compose, "-f", images, "--profile", "images", "build", *no_cache],
            env=env,
            timeout=1800,
        )
        ctx.builds["tranzit images (runtime + nginx)"] = time.monotonic() - started
    progress(f"building the project's app and nginx images {' '.join(no_cache)}")
    started = time.monotonic()
    ds.run([*compose, "-p", name, "build", *no_cache], env=env, cwd=root, timeout=1800)
    ctx.builds["project images (app + nginx)"] = time.monotonic() - started
    return ctx


def cleanup() -> None:
    """Take down every stack and remove every container and image this run made."""
    global _context
    ctx, _context = _context, None
    if ctx is None:
        return
    for stack in list(ctx.stacks):
        with contextlib.suppress(Exception):
            ctx.down(stack)
    for cid in ctx.containers:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=60)
    images = [*ctx.project_images, *ctx.extra_images]
    if ctx.built_tranzit_images:
        images += [ctx.runtime_image, ctx.nginx_image]
    subprocess.run(["docker", "image", "rm", "-f", *images], capture_output=True, timeout=300)
    shutil.rmtree(ctx.root.parent, ignore_errors=True)


def unavailable(name: str, reason: str) -> dict[str, Any]:
    return {"status": "not measured", "reason": reason, "workload": name}


def guarded(
    name: str, body: Callable[[Context, Settings, Callable[[str], None]], dict[str, Any]]
) -> Callable[[Settings, Callable[[str], None]], dict[str, Any]]:
    """A workload that needs the engine; without one it reports why it was not measured."""

    def workload(settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
        try:
            ctx = context(settings, progress)
        except Unavailable as exc:
            progress(f"not measured: {exc}")
            return unavailable(name, str(exc))
        try:
            return body(ctx, settings, progress)
        except Exception as exc:  # one failed Docker workload must not lose the others
            if settings.quick:
                raise
            reason = f"failed: {type(exc).__name__}: {exc}"
            progress(reason.splitlines()[0])
            return unavailable(name, reason[-3000:])

    return workload


# -- helpers --------------------------------------------------------------------------


def inspect(container: str) -> dict[str, Any]:
    return dict(json.loads(ds.run(["docker", "inspect", container], timeout=30).stdout)[0])


def container_ip(container: str) -> str:
    networks = inspect(container)["NetworkSettings"]["Networks"]
    return str(next(iter(networks.values()))["IPAddress"])


def up(stack: Any, *args: str) -> float:
    started = time.monotonic()
    stack.compose(
        "up", "-d", "--wait", "--wait-timeout", "240", "--pull", "never", *args, timeout=400
    )  # fmt: skip
    return time.monotonic() - started


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read()


@contextlib.contextmanager
def bare_nginx(ctx: Context, files: Path) -> Iterator[str]:
    """The same base nginx image with a trivial config; yields its container id."""
    conf = files.parent / "bare-nginx.conf"
    conf.write_text(BARE_CONF)
    cid = ds.run(
        [
            "docker", "run", "-d", "--cpuset-cpus", str(proc.SERVER_CPU),
            "--name", f"{ctx.name}-bare-nginx", "--user", "10101:10101",
            "-v", f"{files}:/srv/static:ro", "-v", f"{conf}:/etc/bare-nginx.conf:ro",
            "--tmpfs", "/tmp", "--entrypoint", "nginx", ctx.env["NGINX_IMAGE"],
            "-c", "/etc/bare-nginx.conf", "-g", "daemon off;",
        ],
        timeout=60,
    ).stdout.strip()  # fmt: skip
    ctx.containers.append(cid)
    try:
        yield cid
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=60)
        ctx.containers.remove(cid)


# -- static files ---------------------------------------------------------------------


def _static(ctx: Context, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise proc.BenchError("wrk is not installed (apt-get install -y wrk)")
    stack = ctx.shared(settings, progress)
    (nginx,) = stack.containers("nginx")
    # nginx on the server core, wrk on the other; straight to the container's
    # address, so Docker's userland proxy of the published port is not measured.
    ds.run(["docker", "update", "--cpuset-cpus", str(proc.SERVER_CPU), nginx], timeout=60)
    servers = {"stack nginx": (nginx, container_ip(nginx))}
    with bare_nginx(ctx, ctx.root / STATIC_DIR) as bare:
        servers["bare nginx"] = (bare, container_ip(bare))
        versions = {
            peer: ds.run(["docker", "exec", cid, "nginx", "-v"], timeout=30).stderr.strip()
            for peer, (cid, _) in servers.items()
        }
        urls = {}
        for peer, (_, ip) in servers.items():
            for label, file in (("small", SMALL), ("1 MiB", LARGE)):
                url = f"http://{ip}:{NGINX_PORT}/static/{'' if peer == 'bare nginx' else 'common/'}"
                url += file
                deadline = time.monotonic() + 20
                while True:  # bounded: the bare container may still be starting
                    try:
                        status, body = get(url)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                expected = (ctx.root / STATIC_DIR / file).read_bytes()
                if status != 200 or body != expected:
                    raise proc.BenchError(f"{peer}: GET {url}: {status}, not the file")
                urls[(peer, label)] = url
        pids = {peer: int(inspect(cid)["State"]["Pid"]) for peer, (cid, _) in servers.items()}
        files: dict[str, dict[str, Any]] = {}
        for label in ("small", "1 MiB"):
            runs: dict[str, list[dict[str, Any]]] = {peer: [] for peer in servers}
            for peer in servers if not settings.quick else ():  # warm-up
                http.run_wrk(urls[(peer, label)], 1, settings.http_connections, pids[peer])
            for rep in range(settings.repeats):
                for peer in servers:
                    r = http.run_wrk(
                        urls[(peer, label)],
                        settings.duration,
                        settings.http_connections,
                        pids[peer],
                    )
                    runs[peer].append(r)
                    cpu = r["cpu_percent"]
                    progress(
                        f"{label} run {rep + 1}/{settings.repeats} {peer}: "
                        f"{r['rps']:.0f} req/s (cpu nginx {cpu.get('server')}%, "
                        f"wrk {cpu.get('client')}%)"
                    )
            files[label] = {"peers": {p: http.summarize(rs) for p, rs in runs.items()}}
    return {
        "files": files,
        "versions": versions,
        "bare": f"{ctx.env['NGINX_IMAGE']} with a trivial config (access_log off)",
        "sizes": {"small": 1024, "1 MiB": 1 << 20},
        "connections": settings.http_connections,
    }


# -- lifecycle ------------------------------------------------------------------------


def _size_mb(image: str) -> float:
    return ds.image_bytes(image) / 1e6


async def _stop_with_websockets(stack: Any, count: int) -> dict[str, Any]:
    """Open ``count`` websockets through nginx (each read from the start, so the
    server's heartbeat pings get their pongs), stop ws, time the closes."""
    import asyncio

    import aiohttp

    closed_at: list[float] = []
    codes: list[int | None] = []
    slots = asyncio.Semaphore(20)
    ready: list[asyncio.Event] = []

    async def one(session: aiohttp.ClientSession) -> None:
        async with slots:
            ws = await asyncio.wait_for(
                session.ws_connect(f"{stack.url}/ws", autoping=True, heartbeat=None), 15
            )
            await ws.send_str("echo|open")
        opened = asyncio.Event()
        ready.append(opened)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                opened.set()
        closed_at.append(time.monotonic())
        codes.append(ws.close_code)

    # limit=0: the default pool of 100 connections would hold the 101st handshake forever.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        try:
            for _ in range(300):  # bounded: 30 s for every client to hear its echo
                if len(ready) == count and all(e.is_set() for e in ready):
                    break
                failed = [t for t in tasks if t.done()]
                if failed:
                    await failed[0]  # raises what went wrong
                    raise proc.BenchError("a websocket closed before `compose stop ws`")
                await asyncio.sleep(0.1)
            else:
                raise proc.BenchError(f"{count} websockets did not all open within 30 s")
            started = time.monotonic()
            await asyncio.to_thread(stack.compose, "stop", "ws", timeout=120)
            stopped = time.monotonic() - started
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "websockets": count,
        "stop_seconds": stopped,
        "all_closed_seconds": max(closed_at) - started,
        "close_codes": {str(k): v for k, v in sorted(_count(codes).items(), key=str)},
    }


def _count(values: list[Any]) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _lifecycle(ctx: Context, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    import asyncio

    base = ctx.env["PYTHON_IMAGE"]
    sizes = {
        "runtime image": _size_mb(ctx.runtime_image),
        "tranzit nginx image": _size_mb(ctx.nginx_image),
        "project app image": _size_mb(ctx.project_images[0]),
        "project nginx image": _size_mb(ctx.project_images[1]),
    }
    over_base = sizes["runtime image"] - _size_mb(base)
    stack = ctx.shared(settings, progress)
    try:
        # Time to serve after a restart: from `compose restart web` returning
        # (the container is running again) to the first 200 through nginx.
        restarts = []
        for _ in range(1 if settings.quick else 3):
            stack.compose("restart", "web", timeout=120)
            began = time.monotonic()
            for _ in range(3000):  # bounded: 20 ms apart, at most a minute
                with contextlib.suppress(OSError):
                    if get(stack.url + "/", timeout=2)[0] == 200:
                        break
                time.sleep(0.02)
            restarts.append(time.monotonic() - began)
        count = 10 if settings.quick else 200
        stop = asyncio.run(_stop_with_websockets(stack, count))
        progress(
            f"stop ws with {count} open websockets: {stop['stop_seconds']:.2f} s, "
            f"codes {stop['close_codes']}"
        )
    finally:
        ctx.down(stack)
    return {
        "image_mb": sizes,
        "python_base": base,
        "runtime_over_base_mb": over_base,
        "builds": ctx.builds,
        "cold_build": ctx.cold,
        **ctx.started,
        "serving_after_restart_seconds": statistics.median(restarts),
        "restart_runs": restarts,
        "stop": stop,
    }


run_static = guarded("static", _static)
run_lifecycle = guarded("lifecycle", _lifecycle)
