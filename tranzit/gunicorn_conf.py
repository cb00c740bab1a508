"""Gunicorn configuration for the http role: the one place gunicorn is configured.

Used as ``gunicorn -c python:tranzit.gunicorn_conf tranzit.app:gunicorn_app``
(what ``tranzit serve http`` runs). Gunicorn reads the module-level names below.

Environment (all optional):

``WEB_CONCURRENCY``
    number of worker processes; else one per CPU of the container's CPU quota
    (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), else per CPU this
    process may run on (its affinity mask), never the host's ``cpu_count``.
``http_host`` / ``http_port`` / ``log_level`` / ``log_format`` of the project's
    config (``server.yml``, then ``TRANZIT_HTTP_HOST`` etc.): the bind address
    (default ``127.0.0.1:3000``; the runtime image sets ``0.0.0.0``), and the level
    and format (``text`` or ``json``) of gunicorn's, aiohttp's and tranzit's lines
    alike (:mod:`tranzit.logs`). ``log_level: debug`` logs each request too.
``GUNICORN_GRACEFUL_TIMEOUT``
    seconds a worker has to stop after SIGTERM (default 10, below the 15 s
    ``stop_grace_period`` of the compose files): first its websockets are
    drained over ``ws_drain_time``, at most half of this (see
    :func:`post_worker_init`), then requests still running have what is left.
``GUNICORN_KEEPALIVE``
    seconds an idle keep-alive connection stays open (default: the project's
    ``keepalive_timeout``, 75). ``header_timeout`` and ``body_timeout`` of the
    project's config apply too (see :func:`post_worker_init`).
``GUNICORN_TIMEOUT``
    seconds of silence before a worker is restarted (default 30).
``GUNICORN_ACCESS_LOG``
    ``1``/``true`` writes an access log to stdout at any ``log_level``; off by
    default below ``debug`` (it costs more than half the throughput of a small handler).

Several workers without a ``broadcast_url`` would each keep their own groups, so
a group's members on different workers would miss each other's messages. Then
``ws_path`` answers 503 instead of serving websockets, and the arbiter says so
at start (:func:`websocket_refusal`).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tranzit.config import Config, load_config, locate_project
from tranzit.logs import logging_config

if TYPE_CHECKING:
    from tranzit.ws.hub import Hub

__all__ = [
    "cgroup_cpu_limit",
    "cpu_count",
    "on_starting",
    "post_worker_init",
    "websocket_refusal",
    "worker_class_name",
    "workers_from_env",
]

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_TRUE = {"1", "true", "yes", "on"}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_cgroup_v2_path(proc_self_cgroup: Path) -> str:
    """The process's cgroup v2 path ("0::/some/path"), "/" when unknown."""
    text = _read(proc_self_cgroup) or ""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return "/"


def _quota_v2(cpu_max: str | None) -> float | None:
    # "max 100000" means no limit; "150000 100000" means 1.5 CPUs.
    if not cpu_max:
        return None
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(quota_text: str | None, period_text: str | None) -> float | None:
    # cpu.cfs_quota_us is -1 when there is no limit.
    try:
        quota, period = int(quota_text or ""), int(period_text or "")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(
    root: Path = _CGROUP_ROOT, proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2, then v1), or None when unlimited.

    Inside a container the cgroup namespace makes ``root`` the container's own
    cgroup; outside one, the v2 path of this process is looked up as well.
    """
    v2_candidates = [root / "cpu.max"]
    own = _own_cgroup_v2_path(proc_self_cgroup).strip("/")
    if own:
        v2_candidates.insert(0, root / own / "cpu.max")
    for candidate in v2_candidates:
        limit = _quota_v2(_read(candidate))
        if limit is not None:
            return limit
    for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / controller
        limit = _quota_v1(_read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us"))
        if limit is not None:
            return limit
    return None


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return 1


def cpu_count(
    root: Path = _CGROUP_ROOT,
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
    affinity: int | None = None,
) -> int:
    """CPUs this container may use: its quota rounded up, capped by its CPU set."""
    usable = affinity if affinity is not None else _affinity_count()
    limit = cgroup_cpu_limit(root, proc_self_cgroup)
    if limit is None:
        return max(1, usable)
    return max(1, min(usable, math.ceil(limit)))


def workers_from_env(env: Mapping[str, str], cpus: int) -> int:
    """``WEB_CONCURRENCY`` when set (a positive integer), else ``cpus``.

    aiohttp workers are single-threaded event loops: one per CPU saturates
    the CPUs, unlike the ``2n+1`` rule for blocking workers.
    """
    raw = env.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return max(1, cpus)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"WEB_CONCURRENCY: expected a positive integer, found {raw!r}")
    return value


def worker_class_name() -> str:
    """aiohttp's uvloop worker when uvloop imports, else its asyncio worker."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "aiohttp.worker.GunicornWebWorker"
    return "aiohttp.worker.GunicornUVLoopWebWorker"


def websocket_refusal(workers: int, config: Config) -> str | None:
    """Why the http role must not serve websockets, or None when it may.

    Without a ``broadcast_url`` each worker has its own in-process hub: members of
    one group on different workers would miss each other's messages.
    """
    if workers <= 1 or config.broadcast_url:
        return None
    return (
        f"websockets are not served at {config.ws_path}: {workers} gunicorn workers without "
        "a broadcast_url would each keep their own groups; set TRANZIT_BROADCAST_URL "
        "(redis://...), run 1 worker (WEB_CONCURRENCY=1) or serve websockets with the "
        "ws role (tranzit serve ws)"
    )


def on_starting(server: Any) -> None:
    """The arbiter, once at start: warn when ``ws_path`` will answer 503."""
    refusal = websocket_refusal(server.cfg.workers, _config)
    if refusal is not None:
        server.log.warning(refusal)


def post_worker_init(worker: Any) -> None:
    """Serve the worker's app with tranzit's runner (header and body timeouts).

    aiohttp's worker accepts an app factory that returns a runner; this one
    gets what the worker would have given its own (logger, keep-alive, access
    log, shutdown time). tranzit's own factory is told when not to serve
    websockets (:func:`websocket_refusal`).
    """
    from aiohttp import web

    from tranzit.app import CONFIG, gunicorn_app
    from tranzit.httpserver import AppRunner, ClientErrorFilter
    from tranzit.ws.hub import HUB

    factory = worker.wsgi
    cfg = worker.cfg
    worker.log.error_log.addFilter(ClientErrorFilter())
    refusal = websocket_refusal(cfg.workers, _config)

    async def runner() -> AppRunner:
        if isinstance(factory, web.Application):
            app = factory
        elif factory is gunicorn_app and refusal is not None:
            app = await gunicorn_app(ws_refusal=refusal)
        else:
            app = await factory()
        # Any aiohttp app may be served with this config; the project's settings then.
        config = app.get(CONFIG, _config)
        hub = app.get(HUB)
        if hub is not None:
            _drain_on_stop(worker, hub, min(config.ws_drain_time, cfg.graceful_timeout / 2))
        log_format = getattr(worker, "_get_valid_log_format", lambda f: None)(cfg.access_log_format)
        return AppRunner(
            app,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            keepalive_timeout=cfg.keepalive,
            logger=worker.log,
            access_log=worker.log.access_log if cfg.accesslog else None,
            **({"access_log_format": log_format} if log_format else {}),
            shutdown_timeout=cfg.graceful_timeout / 100 * 95,
        )

    worker.wsgi = runner


def _drain_on_stop(worker: Any, hub: Hub, window: float) -> None:
    """The worker's SIGTERM and SIGINT drain its websockets before it stops serving.

    aiohttp's worker would stop listening at once. Here ``/readyz`` answers
    503 and the websockets close over ``window`` seconds (:func:`tranzit.ws.drain.drain`)
    while the worker still serves; then the worker's own handler runs, and it
    stops as before. SIGQUIT (the arbiter's quick shutdown) stops it at once.
    """
    from tranzit.ws.drain import drain

    loop = asyncio.get_running_loop()
    draining: set[asyncio.Task[None]] = set()

    def stopping(sig: int, handler: Any) -> None:
        if hub.draining:
            return  # a second signal does not cut the drain short
        hub.draining = True
        task = loop.create_task(drain(hub.connections, window), name="tranzit-drain")
        draining.add(task)

        def drained(task: asyncio.Task[None]) -> None:
            draining.discard(task)
            if not task.cancelled() and task.exception() is not None:
                worker.log.error("draining the websockets failed", exc_info=task.exception())
            handler(sig, None)

        task.add_done_callback(drained)

    loop.add_signal_handler(signal.SIGTERM, stopping, signal.SIGTERM, worker.handle_exit)
    loop.add_signal_handler(signal.SIGINT, stopping, signal.SIGINT, worker.handle_quit)


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name}: expected a whole number of seconds, found {raw!r}")
    return value


# -- what gunicorn reads --------------------------------------------------------

_env = os.environ
# The project's own settings (server.yml, then TRANZIT_*), as every other runner reads them.
_config = load_config(locate_project()[1], required=False)

_host = _config.http_host
if ":" in _host and not _host.startswith("["):  # an IPv6 address
    _host = f"[{_host}]"
bind = [f"{_host}:{_config.http_port}"]
workers = workers_from_env(_env, cpu_count())
worker_class = worker_class_name()
graceful_timeout = _seconds(_env, "GUNICORN_GRACEFUL_TIMEOUT", 10)
timeout = _seconds(_env, "GUNICORN_TIMEOUT", 30)
keepalive = _seconds(_env, "GUNICORN_KEEPALIVE", math.ceil(_config.keepalive_timeout))
_access_log = _env.get("GUNICORN_ACCESS_LOG", "").strip().lower() in _TRUE
accesslog = "-" if _access_log or _config.log_level == "debug" else None
errorlog = "-"
loglevel = _config.log_level
# gunicorn's loggers, aiohttp's and tranzit's in one format (text or json).
logconfig_dict = logging_config(_config.log_level, _config.log_format, gunicorn=True)
proc_name = "tranzit-http"
# gunicorn 23+ opens a control socket at one path per user; tranzit needs none, and
# several servers of one user (or a read-only home) must not collide on it.
control_socket_disable = True
# The heartbeat files of the workers go to memory, not to a (read-only) disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
