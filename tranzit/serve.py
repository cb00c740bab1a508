"""Runners: the development server (HTTP + websockets in one process) and the ``ws`` role.

The ``http`` role of the runtime image runs under gunicorn instead (see
:mod:`tranzit.gunicorn_conf`); both build their apps with :mod:`tranzit.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from .app import create_app, create_hub, create_ws_app
from .config import Config
from .errors import ServeError
from .httpserver import AppRunner
from .project import Project

__all__ = ["run", "run_coroutine", "run_until_signal", "serve", "setup_logging", "start_site"]

log = logging.getLogger("tranzit")


def setup_logging(level: str) -> None:
    """Plain stderr logging at ``level`` (``config.log_level``), once per process."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger().setLevel(level.upper())
    # aiohttp.access logs every request at INFO; it is opt-in through DEBUG.
    if level != "debug":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


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
    """Wait for SIGINT or SIGTERM (Ctrl-C, ``docker stop``)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
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
    """Serve until a signal. ``ws=None`` means ``config.ws_server_on``."""
    with_ws = config.ws_server_on if ws is None else ws
    runners: list[AppRunner] = []
    timeouts = {
        "header_timeout": config.header_timeout,
        "body_timeout": config.body_timeout,
        "keepalive_timeout": config.keepalive_timeout,
        "shutdown_timeout": config.shutdown_timeout,
    }
    # One hub for both apps: a message sent from an HTTP view reaches ws-port clients.
    hub = create_hub(config)
    await hub.start()
    try:
        if http:
            runner = AppRunner(
                create_app(config, project, middlewares=middlewares, hub=hub),
                access_log=None,
                **timeouts,
            )
            runners.append(runner)
            await runner.setup()
            port = await start_site(runner, config.http_host, config.http_port)
            log.info(
                "http://%s:%d/ (websockets also at %s)", config.http_host, port, config.ws_path
            )
        if with_ws:
            runner = AppRunner(create_ws_app(config, project, hub=hub), access_log=None, **timeouts)
            runners.append(runner)
            await runner.setup()
            port = await start_site(runner, config.ws_host, config.ws_port)
            log.info("ws://%s:%d/ (websocket server)", config.ws_host, port)
        if started is not None:
            started.set()
        await run_until_signal()
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
    setup_logging(config.log_level)
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
