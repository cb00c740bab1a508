"""The one app factory: a project directory and a config in, an aiohttp app out.

The dev server (``tranzit run``, ``MainServer``), gunicorn's worker (the
runtime image's ``http`` role), the ``ws`` role and the tests all build their
applications here.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .config import Config
from .loader import load
from .project import Project
from .sessions import check_secret, session_key, setup_sessions
from .throttle import Throttle
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
    "host_checker",
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
    """The HTTP application: app routes, static folders, sessions, ``/healthz``,
    ``/readyz``, ``ws_path``; ``Host`` checked against ``allowed_hosts``.

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


_NO_STORE = {"Cache-Control": "no-store"}
#: Exempt from the Host check: probes call them by an address or a service name.
_HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


async def _healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.Response(text="ok\n", headers=_NO_STORE)


async def _readyz(request: web.Request) -> web.Response:
    """Readiness: the hub's broadcast backend can publish and hears the other replicas."""
    if request.app[HUB].backend.healthy:
        return web.Response(text="ready\n", headers=_NO_STORE)
    return web.Response(
        status=503, text="not ready: the broadcast backend is unreachable\n", headers=_NO_STORE
    )


def create_hub(config: Config) -> Hub:
    """The hub for ``config.broadcast_url`` (in-process, or Redis pub/sub between replicas)."""
    return Hub(
        create_backend(config.broadcast_url, timeout=config.broadcast_timeout),
        send_queue=config.ws_send_queue,
        send_buffer=config.ws_send_buffer,
        send_buffer_total=config.ws_send_buffer_total,
        send_timeout=config.ws_send_timeout,
    )


_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = {"", "0.0.0.0", "::", "*"}


def _bare_host(value: str) -> str:
    """``Host`` without its port, brackets, trailing dot or case: ``[::1]:3000`` → ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:  # name:port (an IPv6 address without brackets has several)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def host_checker(config: Config) -> Any:
    """A predicate on ``Host`` header values for ``config.allowed_hosts``, or None for ``*``.

    Empty: the localhost names and the addresses the servers bind. ``.example.com``
    allows the domain and its subdomains; ports are ignored.
    """
    patterns = config.allowed_hosts or (*_LOCAL_HOSTS, config.http_host, config.ws_host)
    exact: set[str] = set()
    domains: list[str] = []
    for pattern in patterns:
        if pattern.strip() == "*":
            return None
        if pattern.strip().startswith("."):
            domain = _bare_host(pattern.strip()[1:])
            exact.add(domain)
            domains.append("." + domain)
        elif _bare_host(pattern) not in _WILDCARD_BINDS or config.allowed_hosts:
            exact.add(_bare_host(pattern))
    suffixes = tuple(domains)
    known: dict[str, bool] = {}  # per distinct Host value seen, bounded

    def allowed(value: str) -> bool:
        verdict = known.get(value)
        if verdict is None:
            host = _bare_host(value)
            verdict = host in exact or (bool(suffixes) and host.endswith(suffixes))
            if len(known) < 1024:
                known[value] = verdict
        return verdict

    return allowed


def _host_middleware(config: Config) -> Middleware | None:
    """Refuses (400) requests and websocket upgrades whose ``Host`` is not allowed.

    Against DNS rebinding: a page of ``evil.example`` resolved to this server sends
    ``Host: evil.example`` and a matching ``Origin``, which the Origin check accepts.
    """
    allowed = host_checker(config)
    if allowed is None:
        return None
    refusals = Throttle(10.0)

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is None or allowed(host) or request.path in _HEALTH_PATHS:
            return await handler(request)
        if refusals.due():
            log.info(
                "refused a request for Host %r from %s: not in allowed_hosts "
                "(set TRANZIT_ALLOWED_HOSTS); further refusals for 10 s are not logged",
                host[:100],
                request.remote,
            )
        return web.Response(status=400, text="400: Host not allowed\n", headers=_NO_STORE)

    return check_host


def _base_app(
    config: Config, project: Project, middlewares: Iterable[Middleware], hub: Hub | None
) -> web.Application:
    check_host = _host_middleware(config)
    app = web.Application(
        middlewares=[*([check_host] if check_host else []), *middlewares],
        client_max_size=config.max_body_size,
    )
    app[CONFIG] = config
    app[PROJECT] = project
    if hub is None:
        hub = create_hub(config)
        app.on_startup.append(_start_hub)
        app.on_cleanup.append(_close_hub)
    app[HUB] = hub
    check_secret(config)  # production needs a strong secret, whether or not sessions are used
    if config.sessions if config.sessions is not None else project.uses_sessions:
        setup_sessions(app, session_key(config, project))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.on_shutdown.append(_close_websockets)
    return app


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


class _StaticFolder(web.StaticResource):
    """A static folder without its dot-files (``.env``, ``.git/``): 404, as nginx does."""

    async def resolve(self, request: web.Request) -> Any:
        match, allowed = await super().resolve(request)
        if match is not None and any(
            part.startswith(".") for part in match["filename"].replace("\\", "/").split("/")
        ):
            return None, set()
        return match, allowed


def _add_static(router: web.UrlDispatcher, config: Config, project: Project) -> None:
    """Static folders; aiohttp refuses ``..``, absolute paths and symlinks leading out."""
    prefix = config.static_url.rstrip("/")
    folders: list[tuple[str, Path]] = [("tranzit", TRANZIT_STATIC)]
    if project.common_static is not None:
        folders.append(("common", project.common_static))
    folders += [(a.name, a.static_dir) for a in project.apps if a.static_dir is not None]
    for name, path in folders:
        router.register_resource(
            _StaticFolder(
                f"{prefix}/{name}",
                path,
                name=f"static-{name}",
                show_index=False,
                follow_symlinks=False,
            )
        )
