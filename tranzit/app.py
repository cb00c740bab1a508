"""The one app factory: a project directory and a config in, an aiohttp app out.

The dev server (``tranzit run``, ``MainServer``), gunicorn's worker (the
runtime image's ``http`` role), the ``ws`` role and the tests all build their
applications here.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .config import Config
from .errors import ConfigError
from .loader import load
from .project import Project
from .views import add_view
from .ws.endpoint import EndpointSettings, RuleDispatcher, websocket_endpoint
from .ws.hub import HUB, Hub, create_backend

__all__ = [
    "CONFIG",
    "PROJECT",
    "TRANZIT_STATIC",
    "create_app",
    "create_hub",
    "create_ws_app",
    "gunicorn_app",
    "session_key",
]

log = logging.getLogger("tranzit")

# aiohttp-session keeps its session under a string request key; aiohttp 3.14 warns
# about that on every request. It is aiohttp-session's to change, not the user's.
warnings.filterwarnings(
    "ignore", message="It is recommended to use web.RequestKey", module="aiohttp_session"
)

CONFIG = web.AppKey("tranzit.config", Config)
PROJECT = web.AppKey("tranzit.project", Project)

#: The framework's own static files (``tz.js``), served at ``<static_url>/tranzit/``.
TRANZIT_STATIC = Path(__file__).parent / "static"


def create_app(
    config: Config,
    project: Project,
    *,
    middlewares: Iterable[Middleware] = (),
    hub: Hub | None = None,
) -> web.Application:
    """The HTTP application: app routes, static folders, sessions, ``/healthz``, ``ws_path``.

    ``hub`` shares one set of connections and groups between apps of one
    process (the dev server); without it the app makes and runs its own.
    """
    app = _base_app(config, project, middlewares, hub)
    router = app.router
    _add_static(router, config, project)
    for spec in project.apps:
        for path, view in spec.routes.items():
            add_view(router, spec.path_prefix + path, view, app=spec.name)
    router.add_get(config.ws_path, _endpoint(app, config, project))
    return app


def create_ws_app(config: Config, project: Project, *, hub: Hub | None = None) -> web.Application:
    """The standalone websocket application (``ws_port``): the endpoint at every path."""
    app = _base_app(config, project, (), hub)
    app.router.add_get("/{path:.*}", _endpoint(app, config, project, (config.http_port,)))
    return app


async def gunicorn_app() -> web.Application:
    """Entry point for gunicorn's aiohttp worker: ``tranzit.app:gunicorn_app``.

    The project is ``TRANZIT_PROJECT_DIR`` (default: the working directory).
    """
    config, project = load(required=False)
    return create_app(config, project)


_warned_dev_key: set[Path] = set()


def session_key(config: Config, project: Project) -> bytes:
    """The 32-byte key of the encrypted session cookie, stable across restarts and workers."""
    if config.secret_key:
        return hashlib.sha256(config.secret_key.encode()).digest()
    if config.production:
        raise ConfigError(
            str(config.source or "configuration"),
            "secret_key",
            "expected a secret when production is true (set TRANZIT_SECRET_KEY), found none",
        )
    if project.root not in _warned_dev_key:
        _warned_dev_key.add(project.root)
        log.warning(
            "no secret_key set: sessions use a development key derived from the project path; "
            "set TRANZIT_SECRET_KEY before exposing this server"
        )
    return hashlib.sha256(b"tranzit-development-key:" + str(project.root).encode()).digest()


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


def create_hub(config: Config) -> Hub:
    """The hub for ``config.broadcast_url`` (in-process, or Redis pub/sub between replicas)."""
    return Hub(create_backend(config.broadcast_url), send_queue=config.ws_send_queue)


def _base_app(
    config: Config, project: Project, middlewares: Iterable[Middleware], hub: Hub | None
) -> web.Application:
    app = web.Application(middlewares=list(middlewares))
    app[CONFIG] = config
    app[PROJECT] = project
    if hub is None:
        hub = create_hub(config)
        app.on_startup.append(_start_hub)
        app.on_cleanup.append(_close_hub)
    app[HUB] = hub
    if config.production and not config.secret_key:  # whether or not sessions are in use
        session_key(config, project)  # raises the one-line ConfigError
    if config.sessions if config.sessions is not None else project.uses_sessions:
        _setup_sessions(app, session_key(config, project))
    app.router.add_get("/healthz", _healthz)
    app.on_shutdown.append(_close_websockets)
    return app


def _setup_sessions(app: web.Application, key: bytes) -> None:
    """Encrypted cookie sessions (``aiohttp_session.get_session(request)``).

    Imported only here: a project that never uses sessions does not pay for
    their middleware on every request (about 10 µs of a 55 µs hello).
    """
    import aiohttp_session
    from aiohttp_session.cookie_storage import EncryptedCookieStorage

    aiohttp_session.setup(app, EncryptedCookieStorage(key))


async def _close_websockets(app: web.Application) -> None:
    await app[HUB].connections.close_all()


async def _start_hub(app: web.Application) -> None:
    await app[HUB].start()


async def _close_hub(app: web.Application) -> None:
    await app[HUB].close()


def _endpoint(
    app: web.Application, config: Config, project: Project, same_host_ports: tuple[int, ...] = ()
) -> Handler:
    settings = EndpointSettings(
        max_message_size=config.ws_max_message_size,
        heartbeat=config.ws_heartbeat,
        allowed_origins=config.ws_allowed_origins,
        same_host_ports=same_host_ports,
    )
    dispatcher = RuleDispatcher(project.rules, max_tasks=config.ws_max_tasks)
    return websocket_endpoint(dispatcher, settings, app[HUB])


def _add_static(router: web.UrlDispatcher, config: Config, project: Project) -> None:
    """Static folders; aiohttp refuses ``..``, absolute paths and symlinks leading out."""
    prefix = config.static_url.rstrip("/")
    folders: list[tuple[str, Path]] = [("tranzit", TRANZIT_STATIC)]
    if project.common_static is not None:
        folders.append(("common", project.common_static))
    folders += [(a.name, a.static_dir) for a in project.apps if a.static_dir is not None]
    for name, path in folders:
        router.add_static(
            f"{prefix}/{name}/",
            path,
            name=f"static-{name}",
            show_index=False,
            follow_symlinks=False,
        )
