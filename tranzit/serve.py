"""Runners: the development server (HTTP + websockets in one process), its reloader and
the ``ws`` role.

The ``http`` role of the runtime image runs under gunicorn instead (see
:mod:`tranzit.gunicorn_conf`); both build their apps with :mod:`tranzit.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shlex
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.log import access_logger
from aiohttp.typedefs import Middleware

from .app import ROLE, create_apps
from .config import Config
from .errors import ServeError
from .httpserver import AppRunner
from .logs import setup_logging
from .project import Project
from .ws.drain import drain

__all__ = [
    "RELOAD_SUFFIXES",
    "run",
    "run_coroutine",
    "run_reloading",
    "run_until_signal",
    "serve",
    "setup_logging",
    "start_site",
]

log = logging.getLogger("tranzit")


async def start_site(runner: web.BaseRunner, host: str, port: int) -> int:
    """Listen on ``host:port``; returns the port (useful with port 0)."""
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ServeError(f"cannot listen on {host}:{port}: {reason or exc}") from None
    # The address this site bound (the last one the runner knows of).
    addresses = runner.addresses
    return int(addresses[-1][1]) if addresses else port


async def run_until_signal() -> None:
    """Wait for SIGINT or SIGTERM (Ctrl-C, ``docker stop``).

    Once one arrived, further ones are ignored until the loop closes: a shutdown
    in progress is not cut short by a second signal (Ctrl-C reaches both
    ``tranzit run --reload`` and its server, and the reloader then stops the
    server too).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    except BaseException:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        raise
    log.info("shutting down")


async def serve(
    config: Config,
    project: Project,
    *,
    http: bool = True,
    ws: bool | None = None,
    middlewares: Iterable[Middleware] = (),
    started: asyncio.Event | None = None,
) -> None:
    """Serve until a signal, then drain and stop. ``ws=None`` means ``config.ws_server_on``.

    On the signal ``/readyz`` answers 503 at once and the websockets are closed
    over ``ws_drain_time`` seconds (:func:`~tranzit.ws.drain.drain`) while the
    ports still answer; then the servers stop as they would without websockets.
    """
    runners: list[AppRunner] = []
    settings: dict[str, Any] = {
        "header_timeout": config.header_timeout,
        "body_timeout": config.body_timeout,
        "keepalive_timeout": config.keepalive_timeout,
        "shutdown_timeout": config.shutdown_timeout,
        # One line per request costs per request: only at debug.
        "access_log": access_logger if config.log_level == "debug" else None,
    }
    # Everything is built before anything listens (what `tranzit check` builds too); one
    # hub for both apps: a message sent from an HTTP view reaches ws-port clients.
    hub, apps = create_apps(config, project, http=http, ws=ws, middlewares=middlewares)
    await hub.start()
    try:
        for app in apps:
            runner = AppRunner(app, **settings)
            runners.append(runner)
            await runner.setup()
            if app[ROLE] == "http":
                port = await start_site(runner, config.http_host, config.http_port)
                log.info(
                    "http://%s:%d/ (websockets also at %s)", config.http_host, port, config.ws_path
                )
            else:
                port = await start_site(runner, config.ws_host, config.ws_port)
                log.info("ws://%s:%d/ (websocket server)", config.ws_host, port)
        if started is not None:
            started.set()
        await run_until_signal()
        hub.draining = True
        await drain(hub.connections, config.ws_drain_time)
    finally:
        # Shutdown closes websockets with 1001 and cancels their handlers (on_shutdown).
        for runner in reversed(runners):
            await runner.cleanup()
        await hub.close()


def run(
    config: Config,
    project: Project,
    *,
    http: bool = True,
    ws: bool | None = None,
    middlewares: Iterable[Middleware] = (),
) -> None:
    """Blocking form of :func:`serve`, on uvloop when it is installed."""
    setup_logging(config.log_level, config.log_format)
    run_coroutine(serve(config, project, http=http, ws=ws, middlewares=middlewares))


def run_coroutine(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main)
        return
    loop = (loop_factory or asyncio.new_event_loop)()  # pragma: no cover - Python 3.10
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


#: Files whose change restarts ``tranzit run --reload`` (besides the config file in use):
#: code and templates.
RELOAD_SUFFIXES = (".py", ".html", ".jinja2", ".j2")


def run_reloading(command: Sequence[str], config: Config, root: Path) -> None:
    """Run ``command`` (the dev server) and restart it whenever a :data:`RELOAD_SUFFIXES`
    file under ``root`` or the config file (``config.source``) changes, until a signal.

    The server is a child process (watchfiles' ``run_process``), stopped with SIGINT
    before the next one starts, so it gets the same ports. One that fails at start has
    printed its error; the next change starts it again. Directories watchfiles ignores
    by default (``.venv``, ``__pycache__``, ``.git``, ``node_modules``, ...) never count.
    """
    from watchfiles import Change, DefaultFilter, run_process

    setup_logging(config.log_level, config.log_format)
    # Its lines ("process already dead" after a failed start) would repeat the server's.
    logging.getLogger("watchfiles").setLevel(logging.ERROR)
    config_file = config.source
    ignored = DefaultFilter()
    paths = [root]
    if config_file is not None and not config_file.is_relative_to(root):
        paths.append(config_file.parent)

    def wanted(change: Change, path: str) -> bool:
        file = Path(path)
        if file == config_file:
            return True
        if not file.is_relative_to(root):
            return False
        relative = file.relative_to(root)
        return file.suffix in RELOAD_SUFFIXES and ignored(change, str(relative))

    def restarting(changes: set[tuple[Change, str]]) -> None:
        names = sorted(_shown(Path(path), root) for _, path in changes)
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        log.info("%s changed%s: restarting", names[0], more)

    run_process(
        *paths,
        target=shlex.join(command),
        target_type="command",
        watch_filter=wanted,
        callback=restarting,
    )


def _shown(file: Path, root: Path) -> str:
    return str(file.relative_to(root)) if file.is_relative_to(root) else str(file)
