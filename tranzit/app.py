"""The one app factory: a project directory and a config in, an aiohttp app out.

The dev server (``tranzit run``, ``MainServer``), gunicorn's worker (the
runtime image's ``http`` role), the ``ws`` role and the tests all build their
applications here.
"""

from __future__ import annotations

import html
import logging
import secrets
import traceback
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from .auth import SIGNER, Signer
from .config import Config
from .db import database_pool
from .errors import AppLoadError, show_key
from .loader import load
from .project import Project
from .proxy import HEALTH_PATHS, proxy_middleware
from .sessions import check_secret, session_key, setup_sessions
from .templates import setup_templates
from .throttle import Throttle
from .views import add_view
from .ws.endpoint import EndpointSettings, RuleDispatcher, websocket_endpoint
from .ws.hub import HUB, Hub, create_backend

__all__ = [
    "CONFIG",
    "METRICS_PATH",
    "PROJECT",
    "ROLE",
    "TRANZIT_STATIC",
    "create_app",
    "create_apps",
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
#: Which application this is: ``"http"`` (pages, views, ``ws_path``) or ``"ws"`` (the
#: websocket port); ``setup(app)`` runs for both.
ROLE = web.AppKey("tranzit.role", str)

#: The framework's own static files (``tz.js``), served at ``<static_url>/tranzit/``.
TRANZIT_STATIC = Path(__file__).parent / "static"


def create_app(
    config: Config,
    project: Project,
    *,
    middlewares: Iterable[Middleware] = (),
    hub: Hub | None = None,
    ws_refusal: str | None = None,
) -> web.Application:
    """The HTTP application: app routes, static folders, sessions, ``/healthz``,
    ``/readyz``, ``/metrics`` (``metrics: true``), ``ws_path``; ``Host`` checked
    against ``allowed_hosts``.

    ``ws_refusal`` (one line) makes ``ws_path`` answer 503 with it instead of serving
    websockets (several gunicorn workers without a ``broadcast_url``).

    ``hub`` shares one set of connections and groups between apps of one
    process (the dev server); without it the app makes and runs its own.
    """
    app = _base_app(config, project, middlewares, hub)
    app[ROLE] = "http"
    setup_templates(app, project, config)
    router = app.router
    _add_static(router, config, project)
    for spec in project.apps:
        for path, view in spec.routes.items():
            add_view(router, spec.path_prefix + path, view, app=spec.name)
    if ws_refusal is None:
        router.add_get(config.ws_path, _endpoint(app, config, project))
    else:
        router.add_get(config.ws_path, _unavailable(ws_refusal))
    _run_setups(app, project)
    return app


def create_ws_app(config: Config, project: Project, *, hub: Hub | None = None) -> web.Application:
    """The standalone websocket application (``ws_port``): the endpoint at every path."""
    app = _base_app(config, project, (), hub)
    app[ROLE] = "ws"
    app.router.add_get("/{path:.*}", _endpoint(app, config, project, (config.http_port,)))
    _run_setups(app, project)
    return app


def _run_setups(app: web.Application, project: Project) -> None:
    """Every app's ``setup(app)``; what one raises is a load error naming its file and line."""
    for spec in project.apps:
        if spec.setup is None:
            continue
        try:
            spec.setup(app)
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise AppLoadError(
                f"app {spec.name!r}: setup(app) failed at {frame.filename}:{frame.lineno}: "
                f"{type(exc).__name__}: {show_key(str(exc), 200)}"
            ) from exc


def create_apps(
    config: Config,
    project: Project,
    *,
    http: bool = True,
    ws: bool | None = None,
    middlewares: Iterable[Middleware] = (),
) -> tuple[Hub, list[web.Application]]:
    """What a server process runs: one hub, and the HTTP and websocket-port apps sharing it.

    ``ws=None`` means ``config.ws_server_on``. ``tranzit check`` builds exactly this
    too, so it refuses what a start would refuse.
    """
    hub = create_hub(config)
    apps = []
    if http:
        apps.append(create_app(config, project, middlewares=middlewares, hub=hub))
    if config.ws_server_on if ws is None else ws:
        apps.append(create_ws_app(config, project, hub=hub))
    return hub, apps


async def gunicorn_app(*, ws_refusal: str | None = None) -> web.Application:
    """Entry point for gunicorn's aiohttp worker: ``tranzit.app:gunicorn_app``.

    The project is ``TRANZIT_PROJECT_DIR`` (default: the working directory).
    """
    config, project = load(required=False)
    return create_app(config, project, ws_refusal=ws_refusal)


def _unavailable(reason: str) -> Handler:
    """``ws_path`` when websockets are not served here: 503 and the reason, in one line."""
    text = f"503: {reason}\n"

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text=text, headers=_NO_STORE)

    return unavailable


_NO_STORE = {"Cache-Control": "no-store"}


async def _healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.Response(text="ok\n", headers=_NO_STORE)


async def _readyz(request: web.Request) -> web.Response:
    """Readiness: not stopping, and the hub's broadcast backend can publish and hears the
    other replicas."""
    hub = request.app[HUB]
    if hub.draining:
        return web.Response(
            status=503, text="not ready: draining (the server is stopping)\n", headers=_NO_STORE
        )
    if hub.backend.healthy:
        return web.Response(text="ready\n", headers=_NO_STORE)
    return web.Response(
        status=503, text="not ready: the broadcast backend is unreachable\n", headers=_NO_STORE
    )


def create_hub(config: Config) -> Hub:
    """The hub for ``config.broadcast_url`` (in-process, or Redis pub/sub between replicas)."""
    return Hub(
        create_backend(
            config.broadcast_url,
            timeout=config.broadcast_timeout,
            history_size=config.ws_history_size,
            history_age=config.ws_history_age,
        ),
        send_queue=config.ws_send_queue,
        send_buffer=config.ws_send_buffer,
        send_buffer_total=config.ws_send_buffer_total,
        send_timeout=config.ws_send_timeout,
    )


#: Where Prometheus scrapes (``metrics: true``). It calls a container by its service
#: name, like a probe: the Host check lets it through with the probes' paths.
METRICS_PATH = "/metrics"
_UNCHECKED_PATHS = HEALTH_PATHS | {METRICS_PATH}

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


class _HostCheck:
    """Refuses (400) requests and websocket upgrades whose ``Host`` is not allowed.

    Against DNS rebinding: a page of ``evil.example`` resolved to this server sends
    ``Host: evil.example`` and a matching ``Origin``, which the Origin check accepts.
    ``/healthz``, ``/readyz`` and ``/metrics`` are exempt; a request without ``Host``
    (HTTP/1.0) is let through.
    """

    __slots__ = ("allowed", "refusals")

    def __init__(self, allowed: Any) -> None:
        self.allowed = allowed
        self.refusals = Throttle(10.0)

    def refusal(self, request: web.Request, host: str | None) -> web.Response | None:
        if host is None or self.allowed(host) or request.path in _UNCHECKED_PATHS:
            return None
        if self.refusals.due():
            log.info(
                "refused a request for Host %r from %s: not in allowed_hosts "
                "(set TRANZIT_ALLOWED_HOSTS); further refusals for 10 s are not logged",
                host[:100],
                request.remote,
            )
        return web.Response(status=400, text="400: Host not allowed\n", headers=_NO_STORE)

    def middleware(self) -> Middleware:
        """The check as a middleware, after the proxy's: it sees the forwarded host."""

        @web.middleware
        async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
            host = request.host if hdrs.HOST in request.headers else None
            return self.refusal(request, host) or await handler(request)

        return check_host


def _error_response(request: web.Request, exc: Exception, production: bool) -> web.Response:
    """A view's (or a middleware's) exception as a 500 with an error id, also in the log
    line with the traceback. Development: the page shows the traceback; production: the id."""
    error_id = secrets.token_hex(4)
    log.error(
        "%s %s raised %s [%s]",
        request.method,
        request.path[:200],
        type(exc).__name__,
        error_id,
        exc_info=exc,
    )
    if production:
        return web.Response(
            status=500, text=f"500: Internal Server Error [{error_id}]\n", headers=_NO_STORE
        )
    return web.Response(
        status=500,
        text=_traceback_page(request, exc, error_id),
        content_type="text/html",
        headers=_NO_STORE,
    )


def _guard(app: web.Application, config: Config, check: _HostCheck | None) -> None:
    """The Host check and the error pages around all the app serves, without a middleware.

    aiohttp runs an app's first middleware with a second one of its own
    (``_fix_request_current_app``): about 3 µs of a 34 µs hello, a tenth of the
    throughput. Wrapping the app's request handler (``Application._handle``, what
    every server of the app calls, gunicorn's and the test server included) costs
    one coroutine. Without that private name (a future aiohttp), the same is done
    with middlewares.
    """
    production = config.production
    if not callable(getattr(app, "_handle", None)):  # pragma: no cover - a future aiohttp
        log.warning(
            "aiohttp has no Application._handle: the Host check and errors run as middlewares"
        )
        app.middlewares.insert(0, _error_middleware(production))
        if check is not None:
            app.middlewares.insert(1, check.middleware())
        return
    handle = app._handle
    refusal = check.refusal if check is not None else None

    async def guarded(request: web.Request) -> web.StreamResponse:
        if refusal is not None:
            refused = refusal(request, request.headers.get(hdrs.HOST))
            if refused is not None:
                return refused
        try:
            return await handle(request)
        except (web.HTTPException, ConnectionResetError):
            raise
        except Exception as exc:
            return _error_response(request, exc, production)

    # Past Application.__setattr__, which warns about new attributes in aiohttp's debug mode.
    object.__setattr__(app, "_handle", guarded)


def _error_middleware(production: bool) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPException, ConnectionResetError):
            raise
        except Exception as exc:
            return _error_response(request, exc, production)

    return errors


def _traceback_page(request: web.Request, exc: Exception, error_id: str) -> str:
    """The development 500 page: what failed, and the traceback (escaped)."""
    title = html.escape(f"{type(exc).__name__}: {show_key(str(exc), 300)}")
    trace = html.escape("".join(traceback.format_exception(exc)))
    where = html.escape(f"{request.method} {request.path_qs[:300]}")
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>500: "
        f"{title}</title><style>body{{font:15px sans-serif;margin:2em}}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto;font:13px monospace}</style>"
        f"</head><body><h1>500: {title}</h1><p>{where} [{error_id}]</p>"
        f"<pre>{trace}</pre><p>Shown because production is false; in production "
        "the page shows only the error id, which is also in the server log.</p></body></html>\n"
    )


def _base_app(
    config: Config, project: Project, middlewares: Iterable[Middleware], hub: Hub | None
) -> web.Application:
    allowed = host_checker(config)
    check = _HostCheck(allowed) if allowed is not None else None
    proxy = proxy_middleware(config)
    builtin: list[Middleware] = []
    if proxy is not None:  # the proxy's view of the client first; the Host check sees it
        builtin = [proxy, *([check.middleware()] if check is not None else [])]
        check = None
    app = web.Application(
        middlewares=[*builtin, *middlewares], client_max_size=config.max_body_size
    )
    _guard(app, config, check)
    app[CONFIG] = config
    app[PROJECT] = project
    if hub is None:
        hub = create_hub(config)
        app.on_startup.append(_start_hub)
        app.on_cleanup.append(_close_hub)
    app[HUB] = hub
    if config.database_url is not None:
        # Added before setup(app) runs: its cleanup_ctx and on_startup hooks find the pool open.
        app.cleanup_ctx.append(database_pool(config.database_url))
    check_secret(config)  # production needs a strong secret, whether or not sessions are used
    app[SIGNER] = signer = Signer(config, project)
    # Resume tickets are signed with the project's key: every replica accepts the others'.
    hub.ticket_key = lambda: signer.key
    uses_sessions = project.uses_sessions or getattr(project.ws_connect, "uses_sessions", False)
    if config.sessions if config.sessions is not None else uses_sessions:
        setup_sessions(app, session_key(config, project))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    if config.metrics:
        # Imported only here: without metrics, prometheus_client is never loaded.
        from .metrics import metrics_handler, metrics_registry

        app.router.add_get(METRICS_PATH, metrics_handler(metrics_registry(hub)))
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
        connect=project.ws_connect,
    )
    dispatcher = RuleDispatcher(
        project.rules,
        max_tasks=config.ws_max_tasks,
        expose_errors=not config.production,
        stats=app[HUB].stats,
    )
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
