"""A project on disk: its apps' routes, websocket rules and static folders.

``load_project(project_dir, config)`` imports ``apps/<name>/routes.py`` for
every app listed in the config and checks that the apps fit together (no route
or rule defined twice). The result is plain data for :mod:`tranzit.app`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .compat.handlers import adapt as adapt_2018
from .config import Config
from .errors import AppLoadError, show, show_key
from .ws.rules import Adapt, RuleTable

__all__ = ["AppSpec", "ConnectHook", "Project", "SetupHook", "load_project"]

log = logging.getLogger("tranzit")

COMMON_STATIC = Path("common") / "static"

#: ``setup(app)``: called with every ``web.Application`` tranzit builds for the project.
SetupHook = Callable[[Any], None]
#: ``ws_connect(request)``: accepts a websocket (returning its identity) or raises to refuse.
ConnectHook = Callable[[Any], Any]

#: The names tranzit reads from an app's ``routes.py``.
KNOWN_NAMES = ("routes", "ws_rules", "PATH_PREFIX", "APP_STATIC_DIR", "setup", "ws_connect")


@dataclass(frozen=True)
class AppSpec:
    """What one app's ``routes.py`` declares."""

    name: str
    path_prefix: str
    static_dir: Path | None
    routes: Mapping[str, Any]
    ws_rules: Mapping[str, Callable[..., Any]]
    #: ``setup(app)`` from routes.py: middlewares, ``cleanup_ctx``, app keys.
    setup: SetupHook | None = None
    #: ``ws_connect(request)`` from routes.py (at most one app of a project has one).
    ws_connect: ConnectHook | None = None


@dataclass(frozen=True)
class Project:
    root: Path
    apps: tuple[AppSpec, ...] = ()
    rules: RuleTable = field(default_factory=RuleTable)
    #: The project's code imports or names aiohttp_session (sessions: auto).
    uses_sessions: bool = False

    @property
    def setups(self) -> tuple[SetupHook, ...]:
        """Every app's ``setup(app)``, in the order of ``apps``."""
        return tuple(a.setup for a in self.apps if a.setup is not None)

    @property
    def ws_connect(self) -> ConnectHook | None:
        """The project's websocket connect hook, if an app declares one."""
        return next((a.ws_connect for a in self.apps if a.ws_connect is not None), None)

    @property
    def common_static(self) -> Path | None:
        path = self.root / COMMON_STATIC
        return path if path.is_dir() else None


def load_project(
    project_dir: str | Path, config: Config, *, adapt: Adapt | None = adapt_2018
) -> Project:
    """Import every app of ``config.apps`` from ``project_dir/apps``.

    ``adapt`` builds the rules of handlers written for another calling
    convention: by default the 2018 one (:mod:`tranzit.compat.handlers`).
    """
    root = Path(project_dir).resolve()
    if not root.is_dir():
        raise AppLoadError(f"project directory {str(root)!r} does not exist")
    _make_importable(root)
    apps = tuple(_load_app(root, name) for name in config.apps)
    _check_routes(apps)
    _check_connect_hooks(apps)
    rules = RuleTable()
    for app in apps:
        rules.add(app.name, app.ws_rules, adapt=adapt)
    return Project(root, apps, rules, _uses_sessions(root))


def _uses_sessions(root: Path) -> bool:
    """Whether anything imported aiohttp_session, or the project's code names it.

    The text search also finds imports made lazily inside a view.
    """
    if "aiohttp_session" in sys.modules:
        return True
    files = [root / "main.py", *(root / "apps").rglob("*.py")]
    for file in files:
        try:
            if b"aiohttp_session" in file.read_bytes():
                return True
        except OSError:
            continue
    return False


def _make_importable(root: Path) -> None:
    """Put the project on ``sys.path`` so ``apps.<name>`` imports, as the original did.

    A process that already imported another project's ``apps`` package (tests
    serving several projects) forgets it first, so each project gets its own.
    """
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    loaded = sys.modules.get("apps")
    loaded_file = getattr(loaded, "__file__", None) or ""
    if loaded is not None and not Path(loaded_file).resolve().is_relative_to(root):
        for name in [m for m in sys.modules if m == "apps" or m.startswith("apps.")]:
            del sys.modules[name]
    if loaded is not None and str(root) in sys.path:
        sys.path.remove(str(root))
        sys.path.insert(0, str(root))


def _load_app(root: Path, name: str) -> AppSpec:
    routes_file = root / "apps" / name / "routes.py"
    if not routes_file.is_file():
        raise AppLoadError(f"app {name!r}: {routes_file} not found (listed in apps)")
    try:
        module = importlib.import_module(f"apps.{name}.routes")
    except Exception as exc:
        log.debug("importing %s failed", routes_file, exc_info=exc)
        raise AppLoadError(
            f"app {name!r}: importing {routes_file} failed at {_where(exc, root)}: "
            f"{type(exc).__name__}: {show_key(_message(exc), 200)} "
            "(log_level: debug shows the traceback)"
        ) from exc
    _warn_near_misses(module, name)
    return AppSpec(
        name=name,
        path_prefix=_path_prefix(module, name),
        static_dir=_static_dir(module, name, root),
        routes=_attr(module, name, "routes", dict, {}),
        ws_rules=_attr(module, name, "ws_rules", dict, {}),
        setup=_hook(module, name, "setup", async_ok=False),
        ws_connect=_hook(module, name, "ws_connect", async_ok=True),
    )


def _message(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return exc.msg
    return str(exc)


def _where(exc: BaseException, root: Path) -> str:
    """``file:line`` in the project where ``exc`` was raised (the deepest such frame)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_relative(exc.filename, root)}:{exc.lineno or '?'}"
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if _is_under(f.filename, root)]
    if not (inside or frames):
        return "?"
    frame = (inside or frames)[-1]
    return f"{_relative(frame.filename, root)}:{frame.lineno}"


def _is_under(filename: str, root: Path) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def _relative(filename: str, root: Path) -> str:
    path = Path(filename)
    return str(path.relative_to(root)) if _is_under(filename, root) else filename


def _warn_near_misses(module: ModuleType, app: str) -> None:
    """A warning for a module-level name that looks like one tranzit reads (``ws_rule``)."""
    lowered = {k.lower(): k for k in KNOWN_NAMES}
    for attr in vars(module):
        if attr.startswith("_") or attr in KNOWN_NAMES or len(attr) > 40:
            continue
        match = difflib.get_close_matches(attr.lower(), lowered, n=1, cutoff=0.85)
        if match:
            log.warning(
                "app %r: routes.py defines %r, which tranzit does not read; did you mean %r?",
                app,
                attr,
                lowered[match[0]],
            )


def _hook(module: ModuleType, app: str, attr: str, *, async_ok: bool) -> Any:
    hook = getattr(module, attr, None)
    if hook is None:
        return None
    if not callable(hook):
        raise AppLoadError(
            f"app {app!r}: routes.py: {attr}: expected a function, found {show(hook)}"
        )
    if not async_ok and inspect.iscoroutinefunction(hook):
        raise AppLoadError(
            f"app {app!r}: routes.py: setup(app) must be a plain function; start async work "
            "from it with app.cleanup_ctx.append(...) or app.on_startup.append(...)"
        )
    return hook


def _check_connect_hooks(apps: tuple[AppSpec, ...]) -> None:
    having = [a.name for a in apps if a.ws_connect is not None]
    if len(having) > 1:
        raise AppLoadError(
            f"ws_connect is defined by both app {having[0]!r} and app {having[1]!r}; "
            "a project has one websocket connect hook"
        )


def _attr(module: ModuleType, app: str, attr: str, kind: type, default: Any) -> Any:
    value = getattr(module, attr, default)
    if not isinstance(value, kind):
        raise AppLoadError(
            f"app {app!r}: routes.py: {attr}: expected a {kind.__name__}, "
            f"found {type(value).__name__} {show(value)}"
        )
    return value


def _path_prefix(module: ModuleType, app: str) -> str:
    """``PATH_PREFIX``: empty, or a URL path such as ``/api`` that the app's paths follow."""
    prefix: str = _attr(module, app, "PATH_PREFIX", str, "")
    if prefix and not prefix.startswith("/"):
        raise AppLoadError(
            f"app {app!r}: routes.py: PATH_PREFIX: expected '' or a path starting with '/', "
            f"found {show(prefix)}"
        )
    return prefix


def _static_dir(module: ModuleType, app: str, root: Path) -> Path | None:
    value = getattr(module, "APP_STATIC_DIR", None)
    if value is None:
        conventional = root / "apps" / app / "static"
        return conventional if conventional.is_dir() else None
    if not isinstance(value, (str, Path)):
        raise AppLoadError(
            f"app {app!r}: routes.py: APP_STATIC_DIR: expected a path, found {show(value)}"
        )
    path = Path(value)
    if not path.is_absolute():
        path = root / path
    if not path.is_dir():
        raise AppLoadError(f"app {app!r}: APP_STATIC_DIR {str(path)!r} is not a directory")
    return path


def _check_routes(apps: tuple[AppSpec, ...]) -> None:
    seen: dict[str, str] = {}
    for app in apps:
        for path in app.routes:
            if not isinstance(path, str) or not path.startswith("/"):
                raise AppLoadError(
                    f"app {app.name!r}: routes: expected paths starting with '/', "
                    f"found {show(path)}"
                )
            full = app.path_prefix + path
            if full in seen:
                raise AppLoadError(
                    f"route {show(full)} is defined by both app {seen[full]!r} and app {app.name!r}"
                )
            seen[full] = app.name
