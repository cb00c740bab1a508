"""The deployed stack's extras: nginx over HTTPS against plain HTTP, and Postgres at start-up.

``tls``: the bench project's stack twice, ``TRANZIT_TLS=off`` and
``TRANZIT_TLS=self-signed``, in one run; wrk against each nginx container's own
address (nginx pinned to the server core, wrk on the client core) for a 1 KiB
static file and the example's page (nginx → web), on kept-alive connections and
with a new connection (a full TLS handshake) per request.

``postgres``: ``up -d --wait`` of the project generated with
``database=postgres`` (db healthy, migrations applied, then web and ws) against
the same project without a database: the first start (new volumes: initdb) and
starts after ``down`` (volumes kept).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import proc
from ..settings import Settings
from . import http
from .docker import (
    SMALL,
    Context,
    container_ip,
    ds,
    guarded,
    inspect,
    up,
)

#: nginx's ports inside its container (the image's defaults).
HTTP_PORT, HTTPS_PORT = 8080, 8443


def _pinned_nginx(stack: Any) -> tuple[str, int]:
    """The stack's nginx container pinned to the server core: (address, pid)."""
    (nginx,) = stack.containers("nginx")
    ds.run(["docker", "update", "--cpuset-cpus", str(proc.SERVER_CPU), nginx], timeout=60)
    return container_ip(nginx), int(inspect(nginx)["State"]["Pid"])


def _check(url: str) -> None:
    """One request with curl (no certificate check: the stack's own self-signed one)."""
    ds.run(["curl", "-fsSk", "-o", "/dev/null", "-H", "Host: localhost", url], timeout=30)


def _tls(ctx: Context, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    # Two stacks of their own (not the shared one): the page requests are access-logged.
    plain = ctx.stack("tp", {"TRANZIT_TLS": "off"})
    secure = ctx.stack("tt", {"TRANZIT_TLS": "self-signed"})
    progress("compose up --wait, TRANZIT_TLS=off and self-signed")
    up_plain, up_s = up(plain), up(secure)
    try:
        sides = {"http": _pinned_nginx(plain), "https": _pinned_nginx(secure)}
        targets = {"1 KiB static": f"/static/common/{SMALL}", "page (nginx → web)": "/"}
        modes = {"kept-alive": (), "new connection per request": ("-H", "Connection: close")}
        results: dict[str, dict[str, Any]] = {}
        for target, path in targets.items():
            for mode, extra in modes.items():
                urls = {
                    "http": f"http://{sides['http'][0]}:{HTTP_PORT}{path}",
                    "https": f"https://{sides['https'][0]}:{HTTPS_PORT}{path}",
                }
                for url in urls.values():
                    _check(url)
                runs: dict[str, list[dict[str, Any]]] = {"http": [], "https": []}
                for rep in range(settings.repeats):
                    for side, url in urls.items():  # alternating, so drift hits both
                        r = http.run_wrk(
                            url, settings.duration, settings.http_connections,
                            sides[side][1], *extra,
                        )  # fmt: skip
                        runs[side].append(r)
                        cpu = r["cpu_percent"]
                        progress(
                            f"{target}, {mode}, run {rep + 1}/{settings.repeats} {side}: "
                            f"{r['rps']:.0f} req/s (cpu nginx {cpu.get('server')}%, "
                            f"wrk {cpu.get('client')}%)"
                        )
                summary = {side: http.summarize(rs) for side, rs in runs.items()}
                ratio = summary["https"]["rate"] / summary["http"]["rate"]
                results[f"{target}, {mode}"] = {"sides": summary, "https_vs_http": ratio}
        version = ds.run(["docker", "exec", secure.containers("nginx")[0], "nginx", "-v"],
                         timeout=30).stderr.strip()  # fmt: skip
    finally:
        ctx.down(secure)
        ctx.down(plain)
    return {
        "targets": results,
        "connections": settings.http_connections,
        "up_wait_seconds": {"http": up_plain, "https": up_s},
        "nginx": version,
    }


def _postgres(ctx: Context, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    from cookiecutter.main import cookiecutter

    out = ctx.root.parent / "postgres"
    root = Path(
        cookiecutter(
            str(ds.TEMPLATE),
            no_input=True,
            output_dir=str(out),
            extra_context={"database": "postgres"},
        )
    )
    name = f"tzbenchpg{uuid.uuid4().hex[:6]}"
    env = {
        **ctx.env,
        "IMAGE_NAME": f"tranzit-bench/{name}",
        "TRANZIT_SECRET_KEY": secrets.token_urlsafe(32),
    }
    progress("building the database=postgres project (layer cache)")
    started = time.monotonic()
    ds.run([*ctx.compose, "-p", name, "build"], env=env, cwd=root, timeout=1800)
    build_s = time.monotonic() - started
    ctx.extra_images += [f"{env['IMAGE_NAME']}:t", f"{env['IMAGE_NAME']}-nginx:t"]

    def stack_of(project_root: Path, project_env: dict[str, str], suffix: str) -> Any:
        port = proc.free_port()
        stack_env = {
            **project_env,
            "TRANZIT_PUBLISH_PORT": f"127.0.0.1:{port}",
            "TRANZIT_PUBLISH_HTTPS_PORT": f"127.0.0.1:{proc.free_port()}",
            "TRANZIT_TLS": "off",
        }
        stack = ds.Stack(project_root, f"{name}{suffix}", ctx.compose, stack_env, port)
        ctx.stacks.append(stack)
        return stack

    variants = {
        "without a database": stack_of(ctx.root, ctx.env, "n"),
        "database=postgres": stack_of(root, env, "p"),
    }
    times: dict[str, dict[str, Any]] = {}
    try:
        for label, stack in variants.items():
            progress(f"{label}: first up --wait")
            first = up(stack)
            again = []
            for rep in range(settings.repeats):
                stack.compose("down", "-t", "5", timeout=180)  # volumes kept
                again.append(up(stack))
                progress(f"{label}: up --wait after down, run {rep + 1}: {again[-1]:.1f} s")
            times[label] = {"first": first, "again": again}
            progress(f"{label}: first {first:.1f} s, again {min(again):.1f}-{max(again):.1f} s")
    finally:
        for stack in variants.values():
            ctx.down(stack)
    return {"up_wait_seconds": times, "build_seconds": build_s}


run_tls = guarded("tls", _tls)
run_postgres = guarded("postgres", _postgres)
